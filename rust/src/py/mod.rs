//! Python bindings (`fusellm_fast._core`). Arrays are borrowed without copying,
//! the work runs with the GIL released, and results move into numpy arrays
//! without copying.

mod errors;

use numpy::ndarray::{Array2, Array3};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArray3, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::aligner::batch::{status, AlignCounts, BatchInput};
use crate::aligner::options::{AlignOptions, Candidates, Method, Normalize, OneHot, Side, VocabAlign, VocabularyOptions};
use crate::aligner::{self as core};
use crate::edit_distance as distance;
use crate::parallel::Workers;
use crate::text::family::Family;
use crate::text::markers::detect_marker;
use crate::text::token_bytes::{append_token_bytes, NormalizedVocab};
use crate::vocab_map::{build_byte_vocab_map as build_byte_map, build_vocab_map as build_map, VocabMap};
use errors::IntoPyResult;

/// Levenshtein distance between two strings over Unicode code points.
#[pyfunction]
fn edit_distance(a: &str, b: &str) -> u32 {
    distance::edit_distance(a, b)
}

/// The space marker of a vocabulary (`▁` or `Ġ`), or an error saying why none
/// can be told.
#[pyfunction]
#[pyo3(signature = (tokens, *, argument = "tokens"))]
fn detect_space_marker(tokens: Vec<String>, argument: &str) -> PyResult<&'static str> {
    let arg: &'static str = match argument {
        "source_tokens" => "source_tokens",
        "target_tokens" => "target_tokens",
        _ => "tokens",
    };
    detect_marker(&tokens, arg).into_py_result()
}

fn family(name: Option<&str>, arg: &str) -> PyResult<Option<Family>> {
    match name {
        None => Ok(None),
        Some("byte_level") => Ok(Some(Family::ByteLevel)),
        Some("sentencepiece") => Ok(Some(Family::SentencePiece)),
        Some(other) => errors::invalid(arg, format!("must be 'byte_level', 'sentencepiece' or None, got {other:?}")),
    }
}

fn resolved_family(name: Option<&str>, tokens: &[String], arg: &'static str) -> PyResult<Family> {
    match family(name, arg)? {
        Some(f) => Ok(f),
        None => Family::detect(tokens, arg).into_py_result(),
    }
}

/// The exact bytes every token stands for (special ids: none).
#[pyfunction]
#[pyo3(signature = (tokens, *, family = None, special_ids = Vec::new()))]
fn token_bytes<'py>(
    py: Python<'py>,
    tokens: Vec<String>,
    family: Option<&str>,
    special_ids: Vec<u32>,
) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    let family = resolved_family(family, &tokens, "family")?;
    let special: std::collections::HashSet<u32> = special_ids.iter().copied().collect();
    if let Some(&id) = special.iter().find(|&&id| id as usize >= tokens.len()) {
        return errors::invalid("special_ids", format!("id {id} is outside the vocabulary (size {})", tokens.len()));
    }
    Ok(tokens
        .iter()
        .enumerate()
        .map(|(id, t)| {
            let mut out = Vec::new();
            if !special.contains(&(id as u32)) {
                append_token_bytes(t, family, &mut out);
            }
            PyBytes::new(py, &out)
        })
        .collect())
}

type MapArrays<'py> = (Bound<'py, PyArray1<i32>>, Bound<'py, PyArray1<i32>>);

fn map_arrays<'py>(py: Python<'py>, map: &VocabMap) -> MapArrays<'py> {
    (map.target_ids.clone().into_pyarray(py), map.distances.clone().into_pyarray(py))
}

/// MinED map between two vocabularies: `(target_ids, distances)`.
#[pyfunction]
#[pyo3(signature = (source_tokens, target_tokens, source_marker, target_marker, *, workers = -1))]
fn build_vocab_map<'py>(
    py: Python<'py>,
    source_tokens: Vec<String>,
    target_tokens: Vec<String>,
    source_marker: &str,
    target_marker: &str,
    workers: i64,
) -> PyResult<MapArrays<'py>> {
    let workers = Workers::new(workers).into_py_result()?;
    let map = py
        .detach(|| {
            workers.install(|| build_map(&source_tokens, &target_tokens, source_marker, target_marker)).and_then(|r| r)
        })
        .into_py_result()?;
    Ok((map.target_ids.into_pyarray(py), map.distances.into_pyarray(py)))
}

/// MinED map over the exact bytes of the tokens: `(target_ids, distances)`.
#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (source_tokens, target_tokens, *, source_family = None, target_family = None,
                    source_special_ids = Vec::new(), target_special_ids = Vec::new(), special_pairs = Vec::new(),
                    workers = -1))]
fn build_byte_vocab_map<'py>(
    py: Python<'py>,
    source_tokens: Vec<String>,
    target_tokens: Vec<String>,
    source_family: Option<&str>,
    target_family: Option<&str>,
    source_special_ids: Vec<u32>,
    target_special_ids: Vec<u32>,
    special_pairs: Vec<(u32, u32)>,
    workers: i64,
) -> PyResult<MapArrays<'py>> {
    let workers = Workers::new(workers).into_py_result()?;
    let source_family = resolved_family(source_family, &source_tokens, "source_tokens")?;
    let target_family = resolved_family(target_family, &target_tokens, "target_tokens")?;
    let map = py
        .detach(|| {
            let with_pairs = |ids: &[u32], side: fn(&(u32, u32)) -> u32| -> Vec<u32> {
                ids.iter().copied().chain(special_pairs.iter().map(side)).collect()
            };
            let source = NormalizedVocab::new(&source_tokens, source_family,
                                              &with_pairs(&source_special_ids, |p| p.0), "source_special_ids")?;
            let target = NormalizedVocab::new(&target_tokens, target_family,
                                              &with_pairs(&target_special_ids, |p| p.1), "target_special_ids")?;
            workers.install(|| build_byte_map(&source, &target, &source_tokens, &target_tokens, &special_pairs))
                .and_then(|r| r)
        })
        .into_py_result()?;
    Ok((map.target_ids.into_pyarray(py), map.distances.into_pyarray(py)))
}

/// Both vocabularies prepared for alignment; immutable and safe to share
/// between threads.
#[pyclass(frozen, module = "fusellm_fast._core")]
struct Aligner {
    inner: core::Aligner,
}

fn counts_dict<'py>(py: Python<'py>, counts: &AlignCounts) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("positions", counts.positions)?;
    d.set_item("matched", counts.matched)?;
    d.set_item("onehot", counts.onehot)?;
    d.set_item("empty", counts.empty)?;
    d.set_item("dropped_candidates", counts.dropped_candidates)?;
    d.set_item("fallback_texts", counts.fallback_texts)?;
    d.set_item("kept_mass", counts.kept_mass)?;
    Ok(d)
}

fn usize_vec(a: &PyReadonlyArray1<'_, i64>, arg: &'static str) -> PyResult<Vec<usize>> {
    a.as_slice()?
        .iter()
        .map(|&v| usize::try_from(v))
        .collect::<Result<_, _>>()
        .map_err(|_| crate::error::Error::invalid(arg, "offsets and lengths must be non-negative"))
        .into_py_result()
}

type AlignResult<'py> = (
    Bound<'py, PyArray3<i32>>,
    Bound<'py, PyArray3<f32>>,
    Bound<'py, PyArray2<i8>>,
    Bound<'py, PyArray2<i32>>,
    Bound<'py, PyDict>,
);

#[pymethods]
impl Aligner {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (source_tokens, target_tokens, source_marker = None, target_marker = None, *,
                        normalize = "marker", source_family = None, target_family = None,
                        source_special_ids = Vec::new(), target_special_ids = Vec::new(), special_pairs = Vec::new()))]
    fn new(
        py: Python<'_>,
        source_tokens: Vec<String>,
        target_tokens: Vec<String>,
        source_marker: Option<&str>,
        target_marker: Option<&str>,
        normalize: &str,
        source_family: Option<&str>,
        target_family: Option<&str>,
        source_special_ids: Vec<u32>,
        target_special_ids: Vec<u32>,
        special_pairs: Vec<(u32, u32)>,
    ) -> PyResult<Self> {
        let normalize = match normalize {
            "marker" => Normalize::Marker,
            "bytes" => Normalize::Bytes,
            other => return errors::invalid("normalize", format!("must be 'marker' or 'bytes', got {other:?}")),
        };
        let options = VocabularyOptions {
            source_marker,
            target_marker,
            normalize,
            source_family: family(source_family, "source_family")?,
            target_family: family(target_family, "target_family")?,
            source_special_ids: &source_special_ids,
            target_special_ids: &target_special_ids,
            special_pairs: &special_pairs,
        };
        let inner = py
            .detach(|| core::Aligner::new(source_tokens, target_tokens, &options))
            .into_py_result()?;
        Ok(Aligner { inner })
    }

    #[getter]
    fn normalize(&self) -> &'static str {
        match self.inner.vocabularies().normalize {
            Normalize::Marker => "marker",
            Normalize::Bytes => "bytes",
        }
    }

    /// The concatenated bytes of a sequence of token ids of one side.
    #[pyo3(signature = (ids, *, side))]
    fn text_bytes<'py>(&self, py: Python<'py>, ids: Vec<i64>, side: &str) -> PyResult<Bound<'py, PyBytes>> {
        let vocab = match side {
            "source" => &self.inner.vocabularies().source.bytes,
            "target" => &self.inner.vocabularies().target.bytes,
            other => return errors::invalid("side", format!("must be 'source' or 'target', got {other:?}")),
        };
        let mut text = Vec::new();
        for (pos, &id) in ids.iter().enumerate() {
            if id < 0 || id as usize >= vocab.len() {
                return errors::invalid("ids", format!("position {pos}: id {id} is outside the vocabulary (size {})", vocab.len()));
            }
            text.extend_from_slice(vocab.get(id as usize));
        }
        Ok(PyBytes::new(py, &text))
    }

    /// The byte-prefix image of every source id (-1: none).
    #[pyo3(signature = (*, workers = -1))]
    fn prefix_map<'py>(&self, py: Python<'py>, workers: i64) -> PyResult<Bound<'py, PyArray1<i32>>> {
        let workers = Workers::new(workers).into_py_result()?;
        let map = py.detach(|| self.inner.prefix_map(workers).map(<[i32]>::to_vec)).into_py_result()?;
        Ok(map.into_pyarray(py))
    }

    #[getter]
    fn source_marker(&self) -> &str {
        &self.inner.vocabularies().side(Side::Source).marker
    }

    #[getter]
    fn target_marker(&self) -> &str {
        &self.inner.vocabularies().side(Side::Target).marker
    }

    #[getter]
    fn source_size(&self) -> usize {
        self.inner.vocabularies().source.tokens.len()
    }

    #[getter]
    fn target_size(&self) -> usize {
        self.inner.vocabularies().target.tokens.len()
    }

    /// `(target_ids, distances)` of the MinED map, or None before it is built.
    fn vocab_map<'py>(&self, py: Python<'py>) -> Option<MapArrays<'py>> {
        self.inner.vocab_map().map(|m| map_arrays(py, m))
    }

    /// Uses a MinED map built elsewhere.
    fn set_vocab_map(&self, target_ids: PyReadonlyArray1<'_, i32>, distances: PyReadonlyArray1<'_, i32>) -> PyResult<()> {
        let map = VocabMap { target_ids: target_ids.as_slice()?.to_vec(), distances: distances.as_slice()?.to_vec() };
        self.inner.set_vocab_map(map).into_py_result()
    }

    /// Builds the MinED map unless present and returns it.
    #[pyo3(signature = (*, workers = -1))]
    fn ensure_vocab_map<'py>(&self, py: Python<'py>, workers: i64) -> PyResult<MapArrays<'py>> {
        let workers = Workers::new(workers).into_py_result()?;
        py.detach(|| self.inner.ensure_vocab_map(workers).map(|_| ())).into_py_result()?;
        Ok(map_arrays(py, self.inner.vocab_map().expect("built above")))
    }

    /// Aligns a batch: id sequences as flat buffers plus per-text starts and
    /// lengths, top-k lists as one C-contiguous `[rows, k]` array per text (int32
    /// or int64 ids, the same for every text; float32 logits), all borrowed.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (target_ids, target_starts, target_lengths, source_ids, source_starts, source_lengths,
                        topk_ids, topk_logits, *, k, vocab_align, onehot, workers,
                        method = "dtw", candidates = "mined"))]
    fn align<'py>(
        &self,
        py: Python<'py>,
        target_ids: PyReadonlyArray1<'py, i64>,
        target_starts: PyReadonlyArray1<'py, i64>,
        target_lengths: PyReadonlyArray1<'py, i64>,
        source_ids: PyReadonlyArray1<'py, i64>,
        source_starts: PyReadonlyArray1<'py, i64>,
        source_lengths: PyReadonlyArray1<'py, i64>,
        topk_ids: Vec<Bound<'py, PyAny>>,
        topk_logits: Vec<PyReadonlyArray2<'py, f32>>,
        k: usize,
        vocab_align: &str,
        onehot: &str,
        workers: i64,
        method: &str,
        candidates: &str,
    ) -> PyResult<AlignResult<'py>> {
        let method = match method {
            "dtw" => Method::Dtw,
            "offsets" => Method::Offsets,
            "boundary" => Method::Boundary,
            other => return errors::invalid("method", format!("must be 'dtw', 'offsets' or 'boundary', got {other:?}")),
        };
        let candidates = match candidates {
            "mined" => Candidates::Mined,
            "prefix" => Candidates::Prefix,
            other => return errors::invalid("candidates", format!("must be 'mined' or 'prefix', got {other:?}")),
        };
        let vocab_align = match vocab_align {
            "soft" => VocabAlign::Soft,
            "hard" => VocabAlign::Hard,
            other => return errors::invalid("vocab_align", format!("must be 'soft' or 'hard', got {other:?}")),
        };
        let onehot = match onehot {
            "next" => OneHot::Next,
            "current" => OneHot::Current,
            other => return errors::invalid("onehot", format!("must be 'next' or 'current', got {other:?}")),
        };
        let options = AlignOptions { vocab_align, onehot, method, candidates };
        let workers = Workers::new(workers).into_py_result()?;
        let target_starts = usize_vec(&target_starts, "target_ids")?;
        let target_lengths = usize_vec(&target_lengths, "target_ids")?;
        let source_starts = usize_vec(&source_starts, "source_ids")?;
        let source_lengths = usize_vec(&source_lengths, "source_ids")?;
        let logit_rows = rows_of_width(&topk_logits, k, "source_topk_logits")?;
        let inner = &self.inner;

        macro_rules! run {
            ($id_arrays:expr) => {{
                let id_arrays = $id_arrays;
                let input = BatchInput {
                    target_ids: target_ids.as_slice()?,
                    target_starts: &target_starts,
                    target_lengths: &target_lengths,
                    source_ids: source_ids.as_slice()?,
                    source_starts: &source_starts,
                    source_lengths: &source_lengths,
                    topk_ids: rows_of_width(&id_arrays, k, "source_topk_ids")?,
                    topk_logits: logit_rows,
                    k,
                };
                py.detach(|| inner.align_batch(&input, &options, workers))
            }};
        }
        let out = if let Some(arrays) = arrays_of::<i32>(&topk_ids) {
            run!(arrays)
        } else if let Some(arrays) = arrays_of::<i64>(&topk_ids) {
            run!(arrays)
        } else {
            return errors::wrong_type(
                "source_topk_ids",
                "must be 2-D C-contiguous arrays, all int32 or all int64".to_string(),
            );
        }
        .into_py_result()?;

        let shape3 = (out.batch, out.max_length, out.k_out);
        let ids = Array3::from_shape_vec(shape3, out.ids).expect("sized by align_batch").into_pyarray(py);
        let logits = Array3::from_shape_vec(shape3, out.logits).expect("sized by align_batch").into_pyarray(py);
        let shape2 = (out.batch, out.max_length);
        let status = Array2::from_shape_vec(shape2, out.status).expect("sized by align_batch").into_pyarray(py);
        let source_positions =
            Array2::from_shape_vec(shape2, out.source_positions).expect("sized by align_batch").into_pyarray(py);
        Ok((ids, logits, status, source_positions, counts_dict(py, &out.counts)?))
    }
}

/// Every item borrowed as a 2-D array of `T`, or `None` if one is not.
fn arrays_of<'py, T: numpy::Element>(items: &[Bound<'py, PyAny>]) -> Option<Vec<PyReadonlyArray2<'py, T>>> {
    items.iter().map(|item| item.extract::<PyReadonlyArray2<'py, T>>().ok()).collect()
}

/// The row-major elements of each array, checked to have rows of `k` values.
fn rows_of_width<'a, T: numpy::Element>(arrays: &'a [PyReadonlyArray2<'_, T>], k: usize, arg: &str) -> PyResult<Vec<&'a [T]>> {
    arrays
        .iter()
        .enumerate()
        .map(|(b, array)| match array.shape()[1] {
            width if width == k || array.shape()[0] == 0 => Ok(array.as_slice()?),
            width => errors::invalid(arg, format!("text {b} has rows of {width} candidates, expected {k}")),
        })
        .collect()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(edit_distance, m)?)?;
    m.add_function(wrap_pyfunction!(detect_space_marker, m)?)?;
    m.add_function(wrap_pyfunction!(build_vocab_map, m)?)?;
    m.add_function(wrap_pyfunction!(build_byte_vocab_map, m)?)?;
    m.add_function(wrap_pyfunction!(token_bytes, m)?)?;
    m.add_class::<Aligner>()?;
    m.add("STATUS_PADDING", status::PADDING)?;
    m.add("STATUS_EMPTY", status::EMPTY)?;
    m.add("STATUS_MATCHED", status::MATCHED)?;
    m.add("STATUS_ONEHOT", status::ONEHOT)?;
    Ok(())
}
