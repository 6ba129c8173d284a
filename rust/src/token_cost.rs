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
//! [`crate::align::RemainingCost`]: a source token whose string occurs nowhere
//! among the target tokens costs at least its distance to the nearest of them
//! wherever it is aligned (a byte-fallback `<0x0A>` against a byte-level `Ċ`
//! costs 6 on every newline, and the bound sees most of it).

use crate::align::RowCost;
use crate::edit_distance::{dp_distance, PatternTable};
use crate::vocab::SymbolTable;

const UNSET: u32 = u32::MAX;
const NOT_CACHED: u16 = u16::MAX;
/// Largest cost matrix, in entries (8 MiB of u16).
const MAX_CACHE_ENTRIES: usize = 1 << 22;

/// Marker-free strings of both vocabularies with shared equality classes.
pub struct StrippedVocab<'a> {
    pub source: &'a SymbolTable,
    pub target: &'a SymbolTable,
    /// Bytes of text each token stands for, to guide the search.
    pub source_text_len: &'a [u32],
    pub target_text_len: &'a [u32],
    pub source_class: &'a [u32],
    pub target_class: &'a [u32],
    pub classes: usize,
    pub alphabet: usize,
}

/// Reusable per-thread buffers; [`TextCosts::load`] fills them for one text.
#[derive(Default)]
pub struct TextCosts {
    local_class: Vec<u32>,
    touched_classes: Vec<u32>,
    local_symbol: Vec<u32>,
    touched_symbols: Vec<u32>,
    class_symbols: Vec<u32>,
    class_offsets: Vec<usize>,
    in_source: Vec<bool>,
    in_target: Vec<bool>,
    row_class: Vec<u32>,
    col_class: Vec<u32>,
    /// Per local class, its index among the distinct strings of each side.
    source_slot: Vec<u32>,
    target_slot: Vec<u32>,
    row_slot: Vec<u32>,
    col_slot: Vec<u32>,
    cache: Vec<u16>,
    cache_width: usize,
    pub source_ends: Vec<u64>,
    pub target_ends: Vec<u64>,
    pub rows_after: Vec<u32>,
    pub cols_after: Vec<u32>,
    min_cost: Vec<u32>,
    table: Option<PatternTable>,
}

impl TextCosts {
    /// Prepares the costs between `source` and `target` token ids.
    pub fn load(&mut self, vocab: &StrippedVocab<'_>, source: &[usize], target: &[usize]) {
        if self.local_class.len() < vocab.classes {
            self.local_class.resize(vocab.classes, UNSET);
        }
        if self.local_symbol.len() < vocab.alphabet {
            self.local_symbol.resize(vocab.alphabet, UNSET);
        }
        self.class_symbols.clear();
        self.class_offsets.clear();
        self.class_offsets.push(0);
        self.in_source.clear();
        self.in_target.clear();
        self.source_slot.clear();
        self.target_slot.clear();
        let (mut source_slots, mut target_slots) = (0u32, 0u32);

        let mut classes_of = |ids: &[usize], global: &[u32], table: &SymbolTable, text_len: &[u32], from_source: bool,
                              out: &mut Vec<u32>, slots: &mut Vec<u32>, ends: &mut Vec<u64>| {
            out.clear();
            slots.clear();
            ends.clear();
            let mut end = 0u64;
            for &id in ids {
                let g = global[id] as usize;
                if self.local_class[g] == UNSET {
                    self.local_class[g] = self.in_source.len() as u32;
                    self.touched_classes.push(g as u32);
                    for &s in table.get(id) {
                        if self.local_symbol[s as usize] == UNSET {
                            self.local_symbol[s as usize] = self.touched_symbols.len() as u32;
                            self.touched_symbols.push(s);
                        }
                        self.class_symbols.push(self.local_symbol[s as usize]);
                    }
                    self.class_offsets.push(self.class_symbols.len());
                    self.in_source.push(false);
                    self.in_target.push(false);
                    self.source_slot.push(UNSET);
                    self.target_slot.push(UNSET);
                }
                let local = self.local_class[g] as usize;
                let (present, slot, next) = if from_source {
                    (&mut self.in_source[local], &mut self.source_slot[local], &mut source_slots)
                } else {
                    (&mut self.in_target[local], &mut self.target_slot[local], &mut target_slots)
                };
                if !*present {
                    *present = true;
                    *slot = *next;
                    *next += 1;
                }
                out.push(local as u32);
                slots.push(*slot);
                end += u64::from(text_len[id]);
                ends.push(end);
            }
        };
        let (mut rows, mut cols) = (std::mem::take(&mut self.row_class), std::mem::take(&mut self.col_class));
        let (mut row_slots, mut col_slots) = (std::mem::take(&mut self.row_slot), std::mem::take(&mut self.col_slot));
        let (mut source_ends, mut target_ends) =
            (std::mem::take(&mut self.source_ends), std::mem::take(&mut self.target_ends));
        classes_of(source, vocab.source_class, vocab.source, vocab.source_text_len, true, &mut rows, &mut row_slots,
                   &mut source_ends);
        classes_of(target, vocab.target_class, vocab.target, vocab.target_text_len, false, &mut cols, &mut col_slots,
                   &mut target_ends);
        (self.row_slot, self.col_slot) = (row_slots, col_slots);
        let entries = source_slots as usize * target_slots as usize;
        self.cache.clear();
        if entries <= MAX_CACHE_ENTRIES {
            self.cache.resize(entries, NOT_CACHED);
        }
        self.cache_width = target_slots as usize;

        for &g in &self.touched_classes {
            self.local_class[g as usize] = UNSET;
        }
        self.touched_classes.clear();
        let alphabet = self.touched_symbols.len();
        for &s in &self.touched_symbols {
            self.local_symbol[s as usize] = UNSET;
        }
        self.touched_symbols.clear();
        let table = match &mut self.table {
            Some(table) if table.alphabet_size() >= alphabet => table,
            slot => slot.insert(PatternTable::new(alphabet.max(256))),
        };

        // A cell costs at least the distance from its source string to the
        // nearest string on the target side (0 when the string occurs there),
        // and likewise for its target string.
        let classes = self.in_source.len();
        let symbols = |c: u32| &self.class_symbols[self.class_offsets[c as usize]..self.class_offsets[c as usize + 1]];
        let sources: Vec<u32> = (0..classes as u32).filter(|&c| self.in_source[c as usize]).collect();
        let targets: Vec<u32> = (0..classes as u32).filter(|&c| self.in_target[c as usize]).collect();
        let absent_sources = sources.iter().filter(|&&c| !self.in_target[c as usize]).count();
        let absent_targets = targets.iter().filter(|&&c| !self.in_source[c as usize]).count();
        let exact = absent_sources * targets.len() + absent_targets * sources.len() <= rows.len() * cols.len() / 8;
        self.min_cost.clear();
        self.min_cost.resize(classes, 0);
        for c in 0..classes as u32 {
            let (source_side, target_side) = (self.in_source[c as usize], self.in_target[c as usize]);
            if source_side == target_side {
                continue; // on both sides: some cell costs 0
            }
            let others = if source_side { &targets } else { &sources };
            self.min_cost[c as usize] = if exact && table.set(symbols(c)) {
                let mut best = u32::MAX;
                for &o in others {
                    if let Some(d) = table.bounded_distance(symbols(o), best - 1) {
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
        let suffix = |classes: &[u32], min_cost: &[u32], out: &mut Vec<u32>| {
            out.clear();
            out.resize(classes.len(), 0);
            let mut total = 0u32;
            for k in (0..classes.len()).rev() {
                out[k] = total;
                total = total.saturating_add(min_cost[classes[k] as usize]);
            }
        };
        suffix(&rows, &self.min_cost, &mut self.rows_after);
        suffix(&cols, &self.min_cost, &mut self.cols_after);
        (self.row_class, self.col_class, self.source_ends, self.target_ends) = (rows, cols, source_ends, target_ends);
    }

    /// The cell costs of the loaded text.
    pub fn costs(&mut self) -> TokenCost<'_> {
        TokenCost {
            class_symbols: &self.class_symbols,
            class_offsets: &self.class_offsets,
            row_class: &self.row_class,
            col_class: &self.col_class,
            row_slot: &self.row_slot,
            col_slot: &self.col_slot,
            cache: &mut self.cache,
            cache_width: self.cache_width,
            cache_row: 0,
            table: self.table.as_mut().expect("loaded"),
            row: 0,
            row_fits: false,
        }
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

    #[inline]
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
