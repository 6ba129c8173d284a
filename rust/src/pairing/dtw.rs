//! Dynamic time warping between two token sequences (FuseLLM's step 2), with the
//! published backtrace and its tie rules, computed exactly without the dense
//! n x m matrix.
//!
//! The published algorithm fills every cell of the accumulated-cost matrix `D`.
//! Only cells whose value can reach the optimum matter: a cell with `D > U`, for
//! any upper bound `U` of the optimal cost, is neither on an optimal path nor
//! ever chosen by the backtrace (the backtrace always moves to a predecessor of
//! value at most the optimum). So the matrix is filled row by row, each row only
//! over the columns whose value can still be at most `U` (pruned DTW), and the
//! values kept are exactly the dense ones there. `U` is the cost of the best path
//! inside a narrow band around a guide path that follows character positions.

/// Cost of the cell `(i, j)`, asked row by row: `set_row(i)` comes before the
/// `cost(j)` calls of that row.
pub trait RowCost {
    fn set_row(&mut self, i: usize);
    fn cost(&mut self, j: usize) -> u32;
}

const INF: u32 = u32::MAX;

/// Half-width (in columns) of the band around the guide path that gives the
/// upper bound.
const BAND_RADIUS: usize = 2;

/// Rows of the accumulated-cost matrix, each kept over a column range.
#[derive(Debug, Default)]
pub struct DtwScratch {
    row_start: Vec<usize>,
    row_first_col: Vec<usize>,
    row_len: Vec<usize>,
    values: Vec<u32>,
    row_buffer: Vec<u32>,
    band: Vec<(usize, usize)>,
}

/// Lower bounds of the cost still to come: `rows_after[i]` for the rows after
/// `i`, `cols_after[j]` for the columns after `j` (every path to the end visits
/// each of them at least once). Zeros are always valid; tighter bounds prune more.
pub struct RemainingCost<'a> {
    pub rows_after: &'a [u32],
    pub cols_after: &'a [u32],
}

impl DtwScratch {
    #[inline]
    fn get(&self, i: usize, j: usize) -> u32 {
        let first = self.row_first_col[i];
        if j < first || j >= first + self.row_len[i] {
            INF
        } else {
            self.values[self.row_start[i] + j - first]
        }
    }

    /// Fills rows over the columns where a path through the cell can still cost
    /// at most `bound` (its value plus the lower bound of what remains), and
    /// within the band when `use_band`. Returns `D[n-1][m-1]` (INF when above `bound`).
    fn fill(&mut self, cost: &mut impl RowCost, remaining: &RemainingCost<'_>, bound: u32, use_band: bool) -> u32 {
        let (n, m) = (remaining.rows_after.len(), remaining.cols_after.len());
        let DtwScratch { row_start, row_first_col, row_len, values, row_buffer: row, band } = self;
        row_start.clear();
        row_first_col.clear();
        row_len.clear();
        values.clear();
        // Columns of the previous row holding kept values.
        let (mut prev_ok_first, mut prev_ok_last) = (0usize, 0usize);
        for i in 0..n {
            cost.set_row(i);
            let (band_lo, band_hi) = if use_band { band[i] } else { (0, m - 1) };
            let first_col = if i == 0 { 0 } else { prev_ok_first.max(band_lo) };
            let (prev_first, prev) = if i == 0 {
                (0, &[][..])
            } else {
                let (s, len) = (row_start[i - 1], row_len[i - 1]);
                (row_first_col[i - 1], &values[s..s + len])
            };
            let above = |j: usize| j.checked_sub(prev_first).and_then(|k| prev.get(k)).copied().unwrap_or(INF);
            let row_after = remaining.rows_after[i];
            let (mut ok_first, mut ok_last) = (usize::MAX, 0usize);
            let mut left = INF;
            row.clear();
            let mut j = first_col;
            while j < m && j <= band_hi {
                let best_pred = if i == 0 {
                    if j == 0 { 0 } else { left }
                } else {
                    let diag = if j > 0 { above(j - 1) } else { INF };
                    above(j).min(diag).min(left)
                };
                let mut value = INF;
                if best_pred != INF {
                    let v = best_pred.saturating_add(cost.cost(j));
                    if v.saturating_add(row_after.max(remaining.cols_after[j])) <= bound {
                        value = v;
                        ok_first = ok_first.min(j);
                        ok_last = j;
                    }
                }
                row.push(value);
                left = value;
                j += 1;
                // Past the previous row's reach, only moves along this row remain.
                if left == INF && !(i > 0 && j <= prev_ok_last + 1) {
                    break;
                }
            }
            row_start.push(values.len());
            row_first_col.push(first_col);
            row_len.push(row.len());
            values.extend_from_slice(row);
            if ok_first == usize::MAX {
                return INF;
            }
            (prev_ok_first, prev_ok_last) = (ok_first, ok_last);
        }
        self.get(n - 1, m - 1)
    }

    /// Column range of each row for the band around the guide path.
    fn set_band(&mut self, source_ends: &[u64], target_ends: &[u64]) {
        let (n, m) = (source_ends.len(), target_ends.len());
        self.band.clear();
        self.band.resize(n, (usize::MAX, 0));
        let (mut i, mut j) = (0usize, 0usize);
        loop {
            let row = &mut self.band[i];
            row.0 = row.0.min(j.saturating_sub(BAND_RADIUS));
            row.1 = row.1.max((j + BAND_RADIUS).min(m - 1));
            if i == n - 1 && j == m - 1 {
                break;
            }
            if i == n - 1 {
                j += 1;
            } else if j == m - 1 {
                i += 1;
            } else {
                match source_ends[i].cmp(&target_ends[j]) {
                    std::cmp::Ordering::Equal => {
                        i += 1;
                        j += 1;
                    }
                    std::cmp::Ordering::Less => i += 1,
                    std::cmp::Ordering::Greater => j += 1,
                }
            }
        }
        // Widen by rows too: row i also covers the columns of its neighbours.
        let rows = self.band.clone();
        for (i, range) in self.band.iter_mut().enumerate() {
            let lo = i.saturating_sub(BAND_RADIUS);
            let hi = (i + BAND_RADIUS).min(n - 1);
            range.0 = rows[lo..=hi].iter().map(|r| r.0).min().unwrap_or(0);
            range.1 = rows[lo..=hi].iter().map(|r| r.1).max().unwrap_or(m - 1);
        }
    }
}

/// Aligns `n` source positions to `m` target positions.
///
/// `source_ends` / `target_ends`: cumulative character lengths of the tokens,
/// used only to guide the search (any values give the same, exact result).
/// `remaining` must hold lower bounds (see [`RemainingCost`]); they only prune.
/// Returns, for every target position `j`, the first and last source positions
/// aligned to it (the aligned positions always form a contiguous run), or `None`
/// for every target position when either sequence is empty.
pub fn dtw_align(
    source_ends: &[u64],
    target_ends: &[u64],
    remaining: &RemainingCost<'_>,
    cost: &mut impl RowCost,
    scratch: &mut DtwScratch,
) -> Vec<Option<(u32, u32)>> {
    let (n, m) = (source_ends.len(), target_ends.len());
    if n == 0 || m == 0 {
        return vec![None; m];
    }
    scratch.set_band(source_ends, target_ends);
    debug_assert_eq!((remaining.rows_after.len(), remaining.cols_after.len()), (n, m));
    let upper_bound = scratch.fill(cost, remaining, INF - 1, true);
    let optimum = scratch.fill(cost, remaining, upper_bound, false);
    debug_assert!(optimum <= upper_bound);

    let mut spans: Vec<Option<(u32, u32)>> = vec![None; m];
    let mut record = |i: usize, j: usize| {
        let span = spans[j].get_or_insert((i as u32, i as u32));
        span.0 = span.0.min(i as u32);
        span.1 = span.1.max(i as u32);
    };
    let (mut i, mut j) = (n - 1, m - 1);
    while i > 0 || j > 0 {
        record(i, j);
        let diag = if i > 0 && j > 0 { scratch.get(i - 1, j - 1) } else { INF };
        let up = if i > 0 { scratch.get(i - 1, j) } else { INF };
        let left = if j > 0 { scratch.get(i, j - 1) } else { INF };
        // First minimum in the order diagonal, up, left.
        if diag <= up && diag <= left {
            i -= 1;
            j -= 1;
        } else if up <= left {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    record(0, 0);
    spans
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct TableCost<'a> {
        costs: &'a [Vec<u32>],
        row: usize,
    }

    impl RowCost for TableCost<'_> {
        fn set_row(&mut self, i: usize) {
            self.row = i;
        }
        fn cost(&mut self, j: usize) -> u32 {
            self.costs[self.row][j]
        }
    }

    /// The published dense algorithm, transcribed.
    fn dense(costs: &[Vec<u32>]) -> Vec<Option<(u32, u32)>> {
        let (n, m) = (costs.len(), costs[0].len());
        let inf = f64::INFINITY;
        let mut d = vec![vec![inf; m + 1]; n + 1];
        d[0][0] = 0.0;
        for i in 0..n {
            for j in 0..m {
                d[i + 1][j + 1] = costs[i][j] as f64 + d[i][j + 1].min(d[i + 1][j]).min(d[i][j]);
            }
        }
        let at = |i: usize, j: usize| d[i + 1][j + 1];
        let mut spans: Vec<Vec<u32>> = vec![Vec::new(); m];
        let (mut i, mut j) = (n - 1, m - 1);
        while i > 0 || j > 0 {
            spans[j].push(i as u32);
            let opts = [
                if i > 0 && j > 0 { at(i - 1, j - 1) } else { inf },
                if i > 0 { at(i - 1, j) } else { inf },
                if j > 0 { at(i, j - 1) } else { inf },
            ];
            let mut mv = 0;
            for k in 1..3 {
                if opts[k] < opts[mv] {
                    mv = k;
                }
            }
            match mv {
                0 => { i -= 1; j -= 1; }
                1 => i -= 1,
                _ => j -= 1,
            }
        }
        spans[0].push(0);
        spans.into_iter().map(|v| Some((*v.iter().min().unwrap(), *v.iter().max().unwrap()))).collect()
    }

    fn ends(lens: &[u64]) -> Vec<u64> {
        lens.iter().scan(0, |acc, l| { *acc += l; Some(*acc) }).collect()
    }

    /// Admissible bounds from exact row and column minima.
    fn suffix_minima(costs: &[Vec<u32>]) -> (Vec<u32>, Vec<u32>) {
        let (n, m) = (costs.len(), costs[0].len());
        let row_min: Vec<u32> = costs.iter().map(|r| *r.iter().min().unwrap()).collect();
        let col_min: Vec<u32> = (0..m).map(|j| costs.iter().map(|r| r[j]).min().unwrap()).collect();
        let after = |mins: &[u32]| -> Vec<u32> {
            (0..mins.len()).map(|k| mins[k + 1..].iter().sum()).collect()
        };
        let (rows, cols) = (after(&row_min), after(&col_min));
        assert_eq!((rows.len(), cols.len()), (n, m));
        (rows, cols)
    }

    proptest! {
        #[test]
        fn equals_dense(costs in (1usize..14, 1usize..14).prop_flat_map(|(n, m)|
                            proptest::collection::vec(proptest::collection::vec(0u32..4, m), n)),
                        lens in proptest::collection::vec(1u64..4, 28),
                        use_bounds in any::<bool>()) {
            let (n, m) = (costs.len(), costs[0].len());
            let (rows, cols) = if use_bounds { suffix_minima(&costs) } else { (vec![0; n], vec![0; m]) };
            let remaining = RemainingCost { rows_after: &rows, cols_after: &cols };
            let mut scratch = DtwScratch::default();
            let mut cost = TableCost { costs: &costs, row: 0 };
            let got = dtw_align(&ends(&lens[..n]), &ends(&lens[14..14 + m]), &remaining, &mut cost, &mut scratch);
            prop_assert_eq!(got, dense(&costs));
        }
    }

    #[test]
    fn empty_sides() {
        let mut scratch = DtwScratch::default();
        let costs: Vec<Vec<u32>> = vec![];
        let mut cost = TableCost { costs: &costs, row: 0 };
        let remaining = RemainingCost { rows_after: &[], cols_after: &[0, 0] };
        assert_eq!(dtw_align(&[], &[1, 2], &remaining, &mut cost, &mut scratch), vec![None, None]);
    }
}
