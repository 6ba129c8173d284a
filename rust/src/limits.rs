//! The sizes the core can address. Positions and byte offsets are stored in 32
//! bits and outputs must fit in memory; past these limits a call returns
//! [`Error::TooLarge`] instead of wrapping a value or aborting an allocation.

use crate::error::{Error, Result};

/// Most tokens in one text: its positions are written as int32.
pub const MAX_TEXT_TOKENS: usize = i32::MAX as usize;

/// `value` bytes as a 32-bit offset into `what`, or an error naming `arg`.
pub fn byte_offset(value: usize, arg: &'static str, what: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::TooLarge {
        arg,
        msg: format!("{what} spells more than {} bytes", u32::MAX),
    })
}

/// The number of elements of an array of shape `dims` holding `T`s, or an
/// error when it overflows or the array would exceed `isize::MAX` bytes.
pub fn element_count<T>(dims: &[usize], arg: &'static str) -> Result<usize> {
    let count = dims.iter().try_fold(1usize, |count, &d| count.checked_mul(d));
    let bytes = count.and_then(|c| c.checked_mul(std::mem::size_of::<T>().max(1)));
    match (count, bytes) {
        (Some(count), Some(bytes)) if bytes <= isize::MAX as usize => Ok(count),
        _ => Err(Error::TooLarge { arg, msg: format!("an output of shape {dims:?} is too large to address") }),
    }
}

/// `len` copies of `value`, or an error when that much memory cannot be had.
pub fn filled_vec<T: Clone>(len: usize, value: T, arg: &'static str) -> Result<Vec<T>> {
    let mut values = Vec::new();
    values.try_reserve_exact(len).map_err(|_| Error::TooLarge {
        arg,
        msg: format!("an output of {len} values ({} bytes) does not fit in memory", len.saturating_mul(std::mem::size_of::<T>())),
    })?;
    values.resize(len, value);
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_past_32_bits_are_errors() {
        assert_eq!(byte_offset(7, "t", "a text"), Ok(7));
        assert_eq!(byte_offset(u32::MAX as usize, "t", "a text"), Ok(u32::MAX));
        let err = byte_offset(u32::MAX as usize + 1, "target_ids", "text 3").unwrap_err();
        assert_eq!(err.to_string(), "target_ids: text 3 spells more than 4294967295 bytes");
    }

    #[test]
    fn overflowing_or_oversized_shapes_are_errors() {
        assert_eq!(element_count::<i32>(&[2, 3, 4], "x"), Ok(24));
        assert_eq!(element_count::<i32>(&[0, usize::MAX], "x"), Ok(0));
        assert!(matches!(element_count::<i32>(&[usize::MAX, 2], "x"), Err(Error::TooLarge { arg: "x", .. })));
        // Fits in usize as a count, not as bytes.
        assert!(element_count::<i32>(&[isize::MAX as usize / 2], "x").is_err());
        assert!(element_count::<u8>(&[isize::MAX as usize], "x").is_ok());
    }

    #[test]
    fn allocations_beyond_memory_are_errors() {
        assert_eq!(filled_vec(3, -1i32, "x"), Ok(vec![-1, -1, -1]));
        // No machine has 2^62 bytes to give.
        let err = filled_vec(1usize << 60, 0i32, "source_topk_ids").unwrap_err();
        assert!(matches!(err, Error::TooLarge { arg: "source_topk_ids", .. }), "{err}");
    }
}
