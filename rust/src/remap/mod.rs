//! Step 3 of FuseLLM: carry the top-k distribution of each paired source
//! position over to the target vocabulary.

pub mod candidates;
pub mod fast_math;
pub mod images;
pub mod softmax;

/// Row `i` of a row-major block with rows of `k` values.
#[inline]
pub(crate) fn block_row<T>(values: &[T], k: usize, i: usize) -> &[T] {
    &values[i * k..(i + 1) * k]
}
