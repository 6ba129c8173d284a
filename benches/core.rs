//! Criterion benchmarks of the Rust core on synthetic tokenizations: the same
//! pseudo-random text split into pieces two ways (byte-level `Ġ` and
//! SentencePiece `▁` conventions), as two tokenizers would. Benchmarks on real
//! vocabularies, side by side with the reference, are in `bench_alignment.py`.

use std::collections::HashMap;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fusellm_fast::edit_distance::edit_distance;
use fusellm_fast::aligner::batch::BatchInput;
use fusellm_fast::aligner::options::{AlignOptions, Candidates, Method, Normalize, VocabAlign, VocabularyOptions};
use fusellm_fast::aligner::Aligner;
use fusellm_fast::parallel::Workers;
use fusellm_fast::vocab_map::build_vocab_map;

const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "for", "that", "with", "return", "self", "value", "tokenizer",
    "alignment", "distribution", "knowledge", "fusion", "model", "language", "large", "café", "naïve", "def",
    "class", "import", "numpy", "(", ")", ":", ",", ".", "=", "0", "1", "2048", "日本", "語",
];

/// A small deterministic generator, so that runs are comparable.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % bound as u64) as usize
    }
}

/// Splits each word of `words` into 1-3 pieces, the first carrying `marker`.
fn tokenize(words: &[&str], marker: &str, rng: &mut Lcg, vocab: &mut HashMap<String, i64>) -> Vec<i64> {
    let mut ids = Vec::new();
    for word in words {
        let chars: Vec<char> = word.chars().collect();
        let pieces = 1 + rng.next(3).min(chars.len() - 1);
        let mut cuts: Vec<usize> = (0..pieces - 1).map(|_| 1 + rng.next(chars.len() - 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut start = 0;
        for (k, end) in cuts.into_iter().chain([chars.len()]).enumerate() {
            let mut piece: String = chars[start..end].iter().collect();
            if k == 0 {
                piece.insert_str(0, marker);
            }
            let next = vocab.len() as i64;
            ids.push(*vocab.entry(piece).or_insert(next));
            start = end;
        }
    }
    ids
}

fn vocabulary(map: HashMap<String, i64>) -> Vec<String> {
    let mut tokens = vec![String::new(); map.len()];
    for (s, id) in map {
        tokens[id as usize] = s;
    }
    tokens
}

struct Workload {
    aligner: Aligner,
    target: Vec<i64>,
    source: Vec<i64>,
    topk_ids: Vec<i64>,
    topk_logits: Vec<f32>,
}

fn workload(words: usize) -> Workload {
    let mut rng = Lcg(7);
    let text: Vec<&str> = (0..words).map(|_| WORDS[rng.next(WORDS.len())]).collect();
    let (mut source_vocab, mut target_vocab) = (HashMap::new(), HashMap::new());
    let source = tokenize(&text, "Ġ", &mut rng, &mut source_vocab);
    let target = tokenize(&text, "▁", &mut rng, &mut target_vocab);
    let source_size = source_vocab.len();
    let topk_ids = (0..source.len() * 10).map(|_| rng.next(source_size) as i64).collect();
    let topk_logits = (0..source.len() * 10).map(|k| (k % 10) as f32 * -0.5).collect();
    let aligner = Aligner::new(vocabulary(source_vocab), vocabulary(target_vocab), &VocabularyOptions::default()).unwrap();
    aligner.ensure_vocab_map(Workers::new(-1).unwrap()).unwrap();
    Workload { aligner, target, source, topk_ids, topk_logits }
}

fn bench_edit_distance(c: &mut Criterion) {
    c.bench_function("edit_distance/short_tokens", |b| {
        b.iter(|| edit_distance(std::hint::black_box("Ġtokenizer"), std::hint::black_box("▁tokenize")))
    });
}

fn bench_align(c: &mut Criterion) {
    let mut group = c.benchmark_group("align_batch/one_text");
    for words in [256, 1024, 4096] {
        let w = workload(words);
        group.throughput(Throughput::Elements(w.target.len() as u64));
        let input = BatchInput {
            target_ids: &w.target,
            target_starts: &[0],
            target_lengths: &[w.target.len()],
            source_ids: &w.source,
            source_starts: &[0],
            source_lengths: &[w.source.len()],
            topk_ids: vec![&w.topk_ids],
            topk_logits: vec![&w.topk_logits],
            k: 10,
        };
        let options = AlignOptions::default();
        w.aligner.align_batch(&input, &options, Workers::ONE).unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(w.target.len()), &input, |b, input| {
            b.iter(|| w.aligner.align_batch(input, &options, Workers::ONE).unwrap())
        });
    }
    group.finish();
}

/// Texts of random lowercase words, split into pieces both ways, so that the
/// vocabularies are as large as real ones (tens of thousands of tokens) and the
/// lookups into per-token tables miss the cache as they do in practice.
struct Blocks {
    source_vocab: Vec<String>,
    target_vocab: Vec<String>,
    target: Vec<Vec<i64>>,
    source: Vec<Vec<i64>>,
    topk_ids: Vec<Vec<i64>>,
    topk_logits: Vec<Vec<f32>>,
}

fn blocks(texts: usize, words: usize, k: usize) -> Blocks {
    let mut rng = Lcg(11);
    let (mut source_vocab, mut target_vocab) = (HashMap::new(), HashMap::new());
    let (mut source, mut target) = (vec![], vec![]);
    for _ in 0..texts {
        let text: Vec<String> =
            (0..words).map(|_| (0..1 + rng.next(8)).map(|_| (b'a' + rng.next(26) as u8) as char).collect()).collect();
        let text: Vec<&str> = text.iter().map(String::as_str).collect();
        source.push(tokenize(&text, "Ġ", &mut rng, &mut source_vocab));
        target.push(tokenize(&text, "▁", &mut rng, &mut target_vocab));
    }
    let source_size = source_vocab.len();
    let topk_ids = source.iter().map(|s| (0..s.len() * k).map(|_| rng.next(source_size) as i64).collect()).collect();
    // Sorted rows, as a model's top-k lists come.
    let topk_logits = source.iter().map(|s| (0..s.len() * k).map(|slot| (slot % k) as f32 * -0.5).collect()).collect();
    Blocks {
        source_vocab: vocabulary(source_vocab),
        target_vocab: vocabulary(target_vocab),
        target,
        source,
        topk_ids,
        topk_logits,
    }
}

/// Every method and candidate mapping on 8 texts of about 2,048 target
/// tokens with top-10 lists, one thread (the Python `bench_methods.py` times
/// the same on real tokenizers).
fn bench_methods(c: &mut Criterion) {
    let data = blocks(8, 1300, 10);
    let input = BatchInput {
        target_ids: &data.target.concat(),
        target_starts: &starts(&data.target),
        target_lengths: &data.target.iter().map(Vec::len).collect::<Vec<_>>(),
        source_ids: &data.source.concat(),
        source_starts: &starts(&data.source),
        source_lengths: &data.source.iter().map(Vec::len).collect::<Vec<_>>(),
        topk_ids: data.topk_ids.iter().map(Vec::as_slice).collect(),
        topk_logits: data.topk_logits.iter().map(Vec::as_slice).collect(),
        k: 10,
    };
    let aligner = |normalize| {
        let options = VocabularyOptions { normalize, ..VocabularyOptions::default() };
        let aligner = Aligner::new(data.source_vocab.clone(), data.target_vocab.clone(), &options).unwrap();
        aligner.ensure_vocab_map(Workers::ONE).unwrap();
        aligner.prefix_map(Workers::ONE).unwrap();
        aligner
    };
    let (by_marker, by_bytes) = (aligner(Normalize::Marker), aligner(Normalize::Bytes));
    let mut group = c.benchmark_group("align_batch/methods");
    group.throughput(Throughput::Elements(input.target_lengths.iter().sum::<usize>() as u64));
    let configurations = [
        (Method::Dtw, Candidates::Mined, &by_marker),
        (Method::Offsets, Candidates::Mined, &by_bytes),
        (Method::Offsets, Candidates::Prefix, &by_bytes),
        (Method::Boundary, Candidates::Mined, &by_bytes),
        (Method::Boundary, Candidates::Prefix, &by_bytes),
    ];
    for (method, candidates, aligner) in configurations {
        let options = AlignOptions { vocab_align: VocabAlign::Soft, method, candidates, ..AlignOptions::default() };
        let out = aligner.align_batch(&input, &options, Workers::ONE).unwrap();
        assert_eq!(out.counts.fallback_texts, 0, "the two tokenizations spell the same bytes");
        let name = format!("{method:?}+{candidates:?}").to_lowercase();
        group.bench_function(name, |b| b.iter(|| aligner.align_batch(&input, &options, Workers::ONE).unwrap()));
    }
    group.finish();
}

/// Where each of `sequences` starts in their concatenation.
fn starts(sequences: &[Vec<i64>]) -> Vec<usize> {
    sequences.iter().scan(0, |at, s| Some(std::mem::replace(at, *at + s.len()))).collect()
}

fn bench_vocab_map(c: &mut Criterion) {
    let w = workload(20_000);
    let source: Vec<String> = (0..w.aligner.vocabularies().source.tokens.len()).map(|k| format!("Ġ{k:x}")).collect();
    let target: Vec<String> = (0..w.aligner.vocabularies().target.tokens.len()).map(|k| format!("▁{:x}", k * 7)).collect();
    let mut group = c.benchmark_group("vocab_map");
    group.sample_size(10);
    group.throughput(Throughput::Elements(source.len() as u64));
    group.bench_function(format!("{}x{}", source.len(), target.len()), |b| {
        b.iter(|| build_vocab_map(&source, &target, "Ġ", "▁").unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench_edit_distance, bench_align, bench_methods, bench_vocab_map);
criterion_main!(benches);
