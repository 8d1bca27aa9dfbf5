//! INCRBYFLOAT's sum as Redis computes it: in the C library's `long double` (`c/long_double.c`),
//! printed with 17 digits after the point and its trailing zeros cut. Rust has no 80-bit
//! float, and `f64` gives other digits (`1 + -1.1` is `-0.10000000000000009` in `f64`, `-0.1`
//! in Redis). The leader computes it once and logs the result, so replicas never recompute.

use std::ffi::{c_char, c_int, CString};

/// Inputs longer than this are not valid floats, as in Redis (`MAX_LONG_DOUBLE_CHARS`).
pub const FLOAT_TEXT_BYTES_MAX: usize = 5 * 1024;

/// Why a sum could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatError {
    /// The value or the increment is not a float (Redis: `value is not a valid float`).
    Invalid,
    /// The sum is NaN or infinite (Redis: `increment would produce NaN or Infinity`).
    NotFinite,
}

extern "C" {
    fn strata_long_double_add(
        current: *const c_char,
        increment: *const c_char,
        output: *mut c_char,
        capacity: usize,
        written: *mut usize,
    ) -> c_int;
}

/// `current + increment`, both decimal text as a client or the key holds them.
///
/// # Errors
///
/// [`FloatError`] when either is not a float, or the sum is not finite.
pub fn add(current: &[u8], increment: &[u8]) -> Result<Vec<u8>, FloatError> {
    let text = |bytes: &[u8]| {
        if bytes.len() >= FLOAT_TEXT_BYTES_MAX {
            return Err(FloatError::Invalid);
        }
        CString::new(bytes).map_err(|_| FloatError::Invalid)
    };
    let (current, increment) = (text(current)?, text(increment)?);
    // On the stack: only the written digits are copied out.
    let mut output = [0u8; FLOAT_TEXT_BYTES_MAX];
    let mut written = 0usize;
    // SAFETY: both inputs are NUL-terminated strings that outlive the call; `output` holds
    // `output.len()` writable bytes and the C function writes at most that many (snprintf's
    // bound); `written` is a valid place for one usize. The function keeps no pointer.
    let outcome = unsafe {
        strata_long_double_add(
            current.as_ptr(),
            increment.as_ptr(),
            output.as_mut_ptr().cast::<c_char>(),
            output.len(),
            &raw mut written,
        )
    };
    match outcome {
        0 => {
            assert!(written < output.len(), "the sum fits its buffer");
            Ok(output[..written].to_vec())
        }
        2 => Err(FloatError::NotFinite),
        _ => Err(FloatError::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(current: &str, increment: &str) -> Result<String, FloatError> {
        add(current.as_bytes(), increment.as_bytes())
            .map(|bytes| String::from_utf8(bytes).expect("ASCII"))
    }

    #[test]
    fn sums_print_as_redis_prints_them() {
        assert_eq!(sum("0", "10.5"), Ok("10.5".into()));
        assert_eq!(sum("1", "-1.1"), Ok("-0.1".into()));
        assert_eq!(sum("0.1", "0.2"), Ok("0.3".into()));
        assert_eq!(sum("0", "5.0e3"), Ok("5000".into()));
        assert_eq!(sum("0", "3.0e-5"), Ok("0.00003".into()));
        // The long double's own digits show, as in Redis.
        assert_eq!(sum("0", "12345678.9"), Ok("12345678.8999999999996362".into()));
        assert_eq!(sum("1", "-1"), Ok("0".into()));
        assert_eq!(sum("-0", "0"), Ok("0".into()));
    }

    #[test]
    fn what_is_not_a_float_or_not_finite_is_refused() {
        for bad in ["", " 1", "1 ", "abc", "1e99999", "nan", "1\u{0}2"] {
            assert_eq!(sum("0", bad), Err(FloatError::Invalid), "{bad:?}");
            assert_eq!(sum(bad, "1"), Err(FloatError::Invalid), "{bad:?}");
        }
        assert_eq!(sum("0", &"1".repeat(FLOAT_TEXT_BYTES_MAX)), Err(FloatError::Invalid));
        assert_eq!(sum("0", "inf"), Err(FloatError::NotFinite));
        assert_eq!(sum("1e4932", "1e4932"), Err(FloatError::NotFinite));
    }
}
