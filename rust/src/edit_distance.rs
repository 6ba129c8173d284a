//! Levenshtein distance (unit-cost insert, delete, substitute) over sequences of
//! symbols (Unicode code points or dense alphabet ids).
//!
//! Patterns of up to 64 symbols use the bit-parallel algorithm of Myers (1999) in
//! the formulation of Hyyrö (2003): one pass over the text, a handful of word
//! operations per text symbol. Longer patterns fall back to the two-row dynamic
//! programme.

/// Bit masks of a pattern of at most 64 symbols, kept in a dense table indexed by
/// symbol so that a lookup is one load. The table is reused between patterns:
/// [`PatternTable::set`] writes only the pattern's entries and the next `set`
/// clears exactly those again.
#[derive(Debug, Clone)]
pub struct PatternTable {
    masks: Vec<u64>,
    pattern: Vec<u32>,
}

impl PatternTable {
    /// A table for symbols in `0..alphabet_size`.
    pub fn new(alphabet_size: usize) -> Self {
        PatternTable { masks: vec![0; alphabet_size], pattern: Vec::new() }
    }

    /// Number of symbols the table covers.
    pub fn alphabet_size(&self) -> usize {
        self.masks.len()
    }

    /// Makes `pattern` the current pattern. Returns false (leaving no pattern)
    /// when it is longer than 64 symbols.
    pub fn set(&mut self, pattern: &[u32]) -> bool {
        for &s in &self.pattern {
            self.masks[s as usize] = 0;
        }
        self.pattern.clear();
        if pattern.len() > 64 {
            return false;
        }
        for (k, &s) in pattern.iter().enumerate() {
            self.masks[s as usize] |= 1u64 << k;
        }
        self.pattern.extend_from_slice(pattern);
        true
    }

    /// Distance between the current pattern and `text`.
    #[inline]
    pub fn distance(&self, text: &[u32]) -> u32 {
        let m = self.pattern.len();
        if m == 0 {
            return text.len() as u32;
        }
        let last = 1u64 << (m - 1);
        let mut vp: u64 = if m == 64 { !0 } else { (1u64 << m) - 1 };
        let mut vn: u64 = 0;
        let mut dist = m as u32;
        for &s in text {
            let x = self.masks[s as usize] | vn;
            let d0 = ((x & vp).wrapping_add(vp) ^ vp) | x;
            let hp = vn | !(d0 | vp);
            let hn = d0 & vp;
            dist = dist + u32::from(hp & last != 0) - u32::from(hn & last != 0);
            let hp = (hp << 1) | 1;
            vp = (hn << 1) | !(d0 | hp);
            vn = hp & d0;
        }
        dist
    }

    /// Distance between the current pattern and `text`, or `None` as soon as it is
    /// certain to exceed `max`.
    #[inline]
    pub fn bounded_distance(&self, text: &[u32], max: u32) -> Option<u32> {
        let m = self.pattern.len();
        let n = text.len();
        if m == 0 {
            return (n as u32 <= max).then_some(n as u32);
        }
        if m.abs_diff(n) as u32 > max {
            return None;
        }
        let last = 1u64 << (m - 1);
        let mut vp: u64 = if m == 64 { !0 } else { (1u64 << m) - 1 };
        let mut vn: u64 = 0;
        let mut dist = m as u32;
        for (k, &s) in text.iter().enumerate() {
            let eq = self.masks[s as usize];
            let x = eq | vn;
            let d0 = ((x & vp).wrapping_add(vp) ^ vp) | x;
            let mut hp = vn | !(d0 | vp);
            let mut hn = d0 & vp;
            dist += u32::from(hp & last != 0);
            dist -= u32::from(hn & last != 0);
            // Each remaining text symbol can lower the distance by at most one.
            let remaining = (n - k - 1) as u32;
            if dist > max.saturating_add(remaining) {
                return None;
            }
            hp = (hp << 1) | 1;
            hn <<= 1;
            vp = hn | !(d0 | hp);
            vn = hp & d0;
        }
        (dist <= max).then_some(dist)
    }
}

/// Two-row dynamic programme, for patterns longer than 64 symbols.
pub fn dp_distance(a: &[u32], b: &[u32]) -> u32 {
    let (a, b) = if a.len() < b.len() { (b, a) } else { (a, b) };
    let mut row: Vec<u32> = (0..=b.len() as u32).collect();
    for (i, &x) in a.iter().enumerate() {
        let mut diag = row[0];
        row[0] = i as u32 + 1;
        for (j, &y) in b.iter().enumerate() {
            let next = (diag + u32::from(x != y)).min(row[j] + 1).min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Distance between two symbol sequences, using `table` as scratch when one of
/// them fits in 64 symbols.
pub fn distance_with(table: &mut PatternTable, a: &[u32], b: &[u32]) -> u32 {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if table.set(short) {
        table.distance(long)
    } else {
        dp_distance(a, b)
    }
}

/// Levenshtein distance between two strings over Unicode code points.
pub fn edit_distance(a: &str, b: &str) -> u32 {
    // Dense ids for the code points of the shorter string; others share one id
    // that matches nothing in the pattern.
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (short, long) = if a.len() <= b.len() { (&a, &b) } else { (&b, &a) };
    let mut alphabet: Vec<char> = short.clone();
    alphabet.sort_unstable();
    alphabet.dedup();
    let id = |c: &char| alphabet.binary_search(c).map_or(alphabet.len() as u32, |k| k as u32);
    let short: Vec<u32> = short.iter().map(id).collect();
    let long: Vec<u32> = long.iter().map(id).collect();
    let mut table = PatternTable::new(alphabet.len() + 1);
    distance_with(&mut table, &short, &long)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(a: &str, b: &str) -> u32 {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        let mut d = vec![vec![0u32; b.len() + 1]; a.len() + 1];
        for (i, row) in d.iter_mut().enumerate() {
            row[0] = i as u32;
        }
        for (j, cell) in d[0].iter_mut().enumerate() {
            *cell = j as u32;
        }
        for i in 1..=a.len() {
            for j in 1..=b.len() {
                let sub = d[i - 1][j - 1] + u32::from(a[i - 1] != b[j - 1]);
                d[i][j] = sub.min(d[i - 1][j] + 1).min(d[i][j - 1] + 1);
            }
        }
        d[a.len()][b.len()]
    }

    #[test]
    fn known_values() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("▁the", "Ġthe"), 1);
        assert_eq!(edit_distance("café", "cafe"), 1);
        assert_eq!(edit_distance("👍🏽", "👍"), 1);
    }

    #[test]
    fn pattern_of_exactly_64_and_65_symbols() {
        let a = "a".repeat(64);
        let b = "a".repeat(63) + "b";
        assert_eq!(edit_distance(&a, &b), 1);
        assert_eq!(edit_distance(&"x".repeat(65), &"y".repeat(70)), 70);
        assert_eq!(edit_distance(&a, &"a".repeat(130)), 66);
    }

    #[test]
    fn bounded_distance_agrees_with_exact() {
        let mut table = PatternTable::new(4);
        assert!(table.set(&[0, 1, 2, 3]));
        assert_eq!(table.bounded_distance(&[0, 1, 2, 3], 0), Some(0));
        assert_eq!(table.bounded_distance(&[3, 2, 1, 0], 3), None);
        assert_eq!(table.bounded_distance(&[3, 2, 1, 0], 4), Some(4));
        assert_eq!(table.bounded_distance(&[], 3), None);
    }

    proptest! {
        #[test]
        fn matches_naive(a in "[ab▁Ġé👍]{0,80}", b in "[ab▁Ġé👍]{0,80}") {
            prop_assert_eq!(edit_distance(&a, &b), naive(&a, &b));
        }

        #[test]
        fn bounded_is_exact_or_over(a in proptest::collection::vec(0u32..5, 0..64),
                                    b in proptest::collection::vec(0u32..5, 0..70),
                                    max in 0u32..12) {
            let mut table = PatternTable::new(5);
            table.set(&a);
            let exact = dp_distance(&a, &b);
            let bounded = table.bounded_distance(&b, max);
            prop_assert_eq!(bounded, (exact <= max).then_some(exact));
        }
    }
}
