//! DTW cell costs for one text: the edit distance between the marker-free
//! strings of a source and a target token.
//!
//! Per text, the distinct strings get text-local class ids (equal strings cost 0
//! without a comparison) and their characters a text-local alphabet, so the
//! bit-parallel kernel's table is a few hundred entries that stay in L1 cache.
//! Costs between the distinct strings of the two sides are cached in a small
//! matrix (tokens repeat: a 2048-token text has a few hundred distinct strings
//! per side), so most cells cost one load; the matrix is skipped when the text
//! has too many distinct strings for it to stay small.
//! The text-local classes also give lower bounds of the cost still to come for
//! [`RemainingCost`]: a source token whose string occurs nowhere
//! among the target tokens costs at least its distance to the nearest of them
//! wherever it is aligned (a byte-fallback `<0x0A>` against a byte-level `Ċ`
//! costs 6 on every newline, and the bound sees most of it).

use crate::edit_distance::{dp_distance, PatternTable};
use crate::pairing::dtw::{RemainingCost, RowCost};
use crate::pairing::stripped::{StrippedSide, StrippedVocab};

const UNSET: u32 = u32::MAX;
const NOT_CACHED: u16 = u16::MAX;
/// Largest cost matrix, in entries (8 MiB of u16).
const MAX_CACHE_ENTRIES: usize = 1 << 22;

/// Which of a text's local classes one side holds, and each one's index among
/// that side's distinct strings.
#[derive(Default)]
struct Presence {
    present: Vec<bool>,
    slot: Vec<u32>,
    slots: u32,
}

impl Presence {
    fn clear(&mut self) {
        self.present.clear();
        self.slot.clear();
        self.slots = 0;
    }

    /// The slot of local class `local`, given one if this side had none.
    #[inline]
    fn slot_of(&mut self, local: usize) -> u32 {
        if !self.present[local] {
            self.present[local] = true;
            self.slot[local] = self.slots;
            self.slots += 1;
        }
        self.slot[local]
    }
}

/// The distinct strings of one text in text-local ids: classes, and symbols
/// of a text-local alphabet.
#[derive(Default)]
struct LocalClasses {
    /// Global class -> local class, [`UNSET`] outside the text.
    local_class: Vec<u32>,
    touched_classes: Vec<u32>,
    /// Global symbol -> local symbol, [`UNSET`] outside the text.
    local_symbol: Vec<u32>,
    touched_symbols: Vec<u32>,
    /// The local symbols of every local class, one after another.
    class_symbols: Vec<u32>,
    class_offsets: Vec<usize>,
    source: Presence,
    target: Presence,
}

/// One side of a loaded text, per position.
#[derive(Default)]
struct TextSide {
    classes: Vec<u32>,
    slots: Vec<u32>,
    /// Cumulative text lengths, to guide the search.
    ends: Vec<u64>,
    /// Lower bound of the cost of the positions after each one.
    after: Vec<u32>,
}

impl LocalClasses {
    fn start(&mut self, vocab: &StrippedVocab) {
        if self.local_class.len() < vocab.classes {
            self.local_class.resize(vocab.classes, UNSET);
        }
        if self.local_symbol.len() < vocab.alphabet {
            self.local_symbol.resize(vocab.alphabet, UNSET);
        }
        self.class_symbols.clear();
        self.class_offsets.clear();
        self.class_offsets.push(0);
        self.source.clear();
        self.target.clear();
    }

    /// Gives the tokens `ids` of one side local classes and slots.
    fn add(&mut self, ids: &[usize], side: &StrippedSide, from_source: bool, out: &mut TextSide) {
        out.classes.clear();
        out.slots.clear();
        out.ends.clear();
        let mut end = 0u64;
        for &id in ids {
            let g = side.class[id] as usize;
            if self.local_class[g] == UNSET {
                self.local_class[g] = self.source.present.len() as u32;
                self.touched_classes.push(g as u32);
                for &s in side.symbols.get(id) {
                    if self.local_symbol[s as usize] == UNSET {
                        self.local_symbol[s as usize] = self.touched_symbols.len() as u32;
                        self.touched_symbols.push(s);
                    }
                    self.class_symbols.push(self.local_symbol[s as usize]);
                }
                self.class_offsets.push(self.class_symbols.len());
                for presence in [&mut self.source, &mut self.target] {
                    presence.present.push(false);
                    presence.slot.push(UNSET);
                }
            }
            let local = self.local_class[g] as usize;
            let presence = if from_source { &mut self.source } else { &mut self.target };
            out.classes.push(local as u32);
            out.slots.push(presence.slot_of(local));
            end += u64::from(side.text_len[id]);
            out.ends.push(end);
        }
    }

    /// Forgets the global ids met, for the next text; returns the size of the
    /// local alphabet.
    fn finish(&mut self) -> usize {
        for &g in &self.touched_classes {
            self.local_class[g as usize] = UNSET;
        }
        self.touched_classes.clear();
        let alphabet = self.touched_symbols.len();
        for &s in &self.touched_symbols {
            self.local_symbol[s as usize] = UNSET;
        }
        self.touched_symbols.clear();
        alphabet
    }

    fn classes(&self) -> usize {
        self.source.present.len()
    }

    fn symbols(&self, class: u32) -> &[u32] {
        &self.class_symbols[self.class_offsets[class as usize]..self.class_offsets[class as usize + 1]]
    }
}

/// Reusable per-thread buffers; [`TextCosts::load`] fills them for one text.
#[derive(Default)]
pub struct TextCosts {
    local: LocalClasses,
    rows: TextSide,
    cols: TextSide,
    cache: Vec<u16>,
    cache_width: usize,
    min_cost: Vec<u32>,
    table: Option<PatternTable>,
}

/// What [`crate::pairing::dtw::dtw_align`] reads of a loaded text.
pub struct DtwInputs<'a> {
    pub source_ends: &'a [u64],
    pub target_ends: &'a [u64],
    pub remaining: RemainingCost<'a>,
    pub cost: TokenCost<'a>,
}

impl TextCosts {
    /// Prepares the costs between `source` and `target` token ids.
    pub fn load(&mut self, vocab: &StrippedVocab, source: &[usize], target: &[usize]) {
        self.local.start(vocab);
        self.local.add(source, &vocab.source, true, &mut self.rows);
        self.local.add(target, &vocab.target, false, &mut self.cols);
        let entries = self.local.source.slots as usize * self.local.target.slots as usize;
        self.cache.clear();
        if entries <= MAX_CACHE_ENTRIES {
            self.cache.resize(entries, NOT_CACHED);
        }
        self.cache_width = self.local.target.slots as usize;
        let alphabet = self.local.finish();
        let table = match &mut self.table {
            Some(table) if table.alphabet_size() >= alphabet => table,
            slot => slot.insert(PatternTable::new(alphabet.max(256))),
        };
        set_min_costs(&self.local, (self.rows.classes.len(), self.cols.classes.len()), table, &mut self.min_cost);
        for side in [&mut self.rows, &mut self.cols] {
            suffix_sums(&side.classes, &self.min_cost, &mut side.after);
        }
    }

    /// The inputs of the DTW search over the loaded text.
    pub fn dtw_inputs(&mut self) -> DtwInputs<'_> {
        DtwInputs {
            source_ends: &self.rows.ends,
            target_ends: &self.cols.ends,
            remaining: RemainingCost { rows_after: &self.rows.after, cols_after: &self.cols.after },
            cost: TokenCost {
                class_symbols: &self.local.class_symbols,
                class_offsets: &self.local.class_offsets,
                row_class: &self.rows.classes,
                col_class: &self.cols.classes,
                row_slot: &self.rows.slots,
                col_slot: &self.cols.slots,
                cache: &mut self.cache,
                cache_width: self.cache_width,
                cache_row: 0,
                table: self.table.as_mut().expect("loaded"),
                row: 0,
                row_fits: false,
            },
        }
    }
}

/// Per local class, a lower bound of the cost of any cell of its row or
/// column: the distance from its string to the nearest string on the other
/// side (0 when the string occurs there). Computed exactly only when that
/// takes far fewer comparisons than the text has cells; 1 otherwise.
fn set_min_costs(local: &LocalClasses, (rows, cols): (usize, usize), table: &mut PatternTable, min_cost: &mut Vec<u32>) {
    let classes = local.classes();
    let (in_source, in_target) = (&local.source.present, &local.target.present);
    let sources: Vec<u32> = (0..classes as u32).filter(|&c| in_source[c as usize]).collect();
    let targets: Vec<u32> = (0..classes as u32).filter(|&c| in_target[c as usize]).collect();
    let absent_sources = sources.iter().filter(|&&c| !in_target[c as usize]).count();
    let absent_targets = targets.iter().filter(|&&c| !in_source[c as usize]).count();
    let exact = absent_sources * targets.len() + absent_targets * sources.len() <= rows * cols / 8;
    min_cost.clear();
    min_cost.resize(classes, 0);
    for c in 0..classes as u32 {
        let (source_side, target_side) = (in_source[c as usize], in_target[c as usize]);
        if source_side == target_side {
            continue; // on both sides: some cell costs 0
        }
        let others = if source_side { &targets } else { &sources };
        min_cost[c as usize] = if exact && table.set(local.symbols(c)) {
            let mut best = u32::MAX;
            for &o in others {
                if let Some(d) = table.bounded_distance(local.symbols(o), best - 1) {
                    best = d;
                    if best <= 1 {
                        break;
                    }
                }
            }
            best.clamp(1, u32::MAX - 1)
        } else {
            1
        };
    }
}

/// `out[k]`: the sum of the minimum costs of the classes after position `k`.
fn suffix_sums(classes: &[u32], min_cost: &[u32], out: &mut Vec<u32>) {
    out.clear();
    out.resize(classes.len(), 0);
    let mut total = 0u32;
    for k in (0..classes.len()).rev() {
        out[k] = total;
        total = total.saturating_add(min_cost[classes[k] as usize]);
    }
}

/// [`RowCost`] over a loaded text.
pub struct TokenCost<'a> {
    class_symbols: &'a [u32],
    class_offsets: &'a [usize],
    row_class: &'a [u32],
    col_class: &'a [u32],
    row_slot: &'a [u32],
    col_slot: &'a [u32],
    /// Empty when the text has too many distinct strings.
    cache: &'a mut [u16],
    cache_width: usize,
    cache_row: usize,
    table: &'a mut PatternTable,
    row: u32,
    row_fits: bool,
}

impl TokenCost<'_> {
    #[inline]
    fn symbols(&self, class: u32) -> &[u32] {
        &self.class_symbols[self.class_offsets[class as usize]..self.class_offsets[class as usize + 1]]
    }
}

impl RowCost for TokenCost<'_> {
    fn set_row(&mut self, i: usize) {
        self.row = self.row_class[i];
        self.cache_row = self.row_slot[i] as usize * self.cache_width;
        let pattern = &self.class_symbols[self.class_offsets[self.row as usize]..self.class_offsets[self.row as usize + 1]];
        self.row_fits = self.table.set(pattern);
    }

    // Called once per cell of the DTW search: inlined into it, which the
    // compiler does not always find on its own.
    #[inline(always)]
    fn cost(&mut self, j: usize) -> u32 {
        let col = self.col_class[j];
        if col == self.row {
            return 0;
        }
        let slot = self.cache_row + self.col_slot[j] as usize;
        if let Some(&cached) = self.cache.get(slot) {
            if cached != NOT_CACHED {
                return u32::from(cached);
            }
        }
        let cost = if self.row_fits {
            self.table.distance(self.symbols(col))
        } else {
            dp_distance(self.symbols(self.row), self.symbols(col))
        };
        if let (Some(entry), Ok(small)) = (self.cache.get_mut(slot), u16::try_from(cost)) {
            if small != NOT_CACHED {
                *entry = small;
            }
        }
        cost
    }
}
