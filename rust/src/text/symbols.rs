//! The dense symbol encoding that the edit-distance kernels work on, and
//! equality classes of strings.

use std::collections::HashMap;

/// Dense ids for the code points met so far, so that pattern tables are small
/// arrays rather than hash maps.
#[derive(Debug, Default, Clone)]
pub struct Alphabet {
    ids: HashMap<char, u32>,
}

impl Alphabet {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn encode_into(&mut self, text: &str, out: &mut Vec<u32>) {
        for c in text.chars() {
            let next = self.ids.len() as u32;
            out.push(*self.ids.entry(c).or_insert(next));
        }
    }
}

/// Many strings as symbol sequences in one flat buffer.
#[derive(Debug, Default, Clone)]
pub struct SymbolTable {
    symbols: Vec<u32>,
    offsets: Vec<usize>,
}

impl SymbolTable {
    /// Encodes every string of `strings`, growing `alphabet` as needed.
    pub fn encode<S: AsRef<str>>(strings: impl IntoIterator<Item = S>, alphabet: &mut Alphabet) -> Self {
        let mut table = SymbolTable { symbols: Vec::new(), offsets: vec![0] };
        for s in strings {
            alphabet.encode_into(s.as_ref(), &mut table.symbols);
            table.offsets.push(table.symbols.len());
        }
        table
    }

    /// Takes sequences already made of symbols (bytes are symbols 0..=255).
    pub fn from_sequences<T: IntoIterator<Item = u32>>(sequences: impl IntoIterator<Item = T>) -> Self {
        let mut table = SymbolTable { symbols: Vec::new(), offsets: vec![0] };
        for sequence in sequences {
            table.symbols.extend(sequence);
            table.offsets.push(table.symbols.len());
        }
        table
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub fn get(&self, index: usize) -> &[u32] {
        &self.symbols[self.offsets[index]..self.offsets[index + 1]]
    }
}

/// For every string, the lowest index holding an equal string (`classes`), and
/// a lookup from string to that index.
pub fn first_occurrences<S: AsRef<str>>(strings: &[S]) -> (Vec<u32>, HashMap<&str, u32>) {
    let mut first: HashMap<&str, u32> = HashMap::with_capacity(strings.len());
    let classes = strings
        .iter()
        .enumerate()
        .map(|(k, s)| *first.entry(s.as_ref()).or_insert(k as u32))
        .collect();
    (classes, first)
}

/// Class ids shared by two sides: equal keys get equal ids. Returns both
/// sides' ids and the number of classes.
pub fn shared_classes<K: std::hash::Hash + Eq>(
    source: impl Iterator<Item = K>,
    target: impl Iterator<Item = K>,
) -> (Vec<u32>, Vec<u32>, usize) {
    let mut classes: HashMap<K, u32> = HashMap::new();
    let mut class_of = |key: K| {
        let next = classes.len() as u32;
        *classes.entry(key).or_insert(next)
    };
    let source: Vec<u32> = source.map(&mut class_of).collect();
    let target: Vec<u32> = target.map(&mut class_of).collect();
    (source, target, classes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_tables_share_an_alphabet() {
        let mut alphabet = Alphabet::default();
        let a = SymbolTable::encode(["ab", "", "ba"], &mut alphabet);
        let b = SymbolTable::encode(["bé"], &mut alphabet);
        assert_eq!(a.get(0), &[0, 1]);
        assert_eq!(a.get(1), &[] as &[u32]);
        assert_eq!(a.get(2), &[1, 0]);
        assert_eq!(b.get(0), &[1, 2]);
        assert_eq!(alphabet.len(), 3);
    }

    #[test]
    fn first_occurrence_classes() {
        let (classes, first) = first_occurrences(&["a", "b", "a"]);
        assert_eq!(classes, vec![0, 1, 0]);
        assert_eq!(first["a"], 0);
    }

    #[test]
    fn shared_classes_join_equal_keys_of_both_sides() {
        let (source, target, classes) = shared_classes(["a", "b"].into_iter(), ["b", "c", "a"].into_iter());
        assert_eq!((source, target, classes), (vec![0, 1], vec![1, 2, 0], 3));
    }
}
