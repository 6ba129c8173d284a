//! Token strings and what they spell: the space markers, the vocabulary
//! families, the exact bytes of every token, and the dense symbol tables the
//! edit-distance kernels read.

pub mod family;
pub mod markers;
pub mod symbols;
pub mod token_bytes;
