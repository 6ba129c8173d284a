//! Fast exponentials and logarithms for softmax terms: branch-free
//! polynomials that vectorize over a row of candidates, unlike calls into libm.

/// e^x for x <= 0 within a few ulp (Cephes' expf polynomial after rounding to
/// a power of two), and 0 below -87 where e^x leaves the normal range.
/// Branch-free, so a row of candidates vectorizes, unlike calls into libm.
#[inline]
pub fn exp_nonpositive(x: f32) -> f32 {
    // Adding 1.5 * 2^23 rounds to an integer in the default rounding mode.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    let clamped = x.max(-87.0);
    let rounded = clamped * std::f32::consts::LOG2_E + ROUND;
    let n = rounded - ROUND;
    // The integer n sits in the low bits of `rounded` (an integer conversion
    // that, unlike `as`, needs no saturation and so vectorizes).
    let n_bits = (rounded.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = clamped - n * LN2_HIGH - n * LN2_LOW;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    // n lies in [-126, 0]: 2^n is a normal float.
    let power = f32::from_bits(((n_bits + 127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        e * power
    }
}


/// ln(x) for a row's sum of softmax terms, which is at least 1 (its largest
/// term is e^0) and at most k (or 0 for a row without candidates: -inf), within
/// a few ulp (Cephes' logf polynomial on the mantissa). Branch-free, so the
/// rows' logarithms vectorize, unlike calls into libm.
#[inline]
pub fn ln_at_least_one(x: f32) -> f32 {
    const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
    let bits = x.to_bits();
    // x = m * 2^e with m in [0.5, 1), then m moved to [sqrt(1/2), sqrt(2)).
    let mut e = ((bits >> 23) as i32 - 126) as f32;
    let mut m = f32::from_bits((bits & 0x007F_FFFF) | 0x3F00_0000);
    let below = m < SQRT_HALF;
    e -= if below { 1.0 } else { 0.0 };
    m = if below { m + m } else { m } - 1.0;
    let z = m * m;
    let p = ((((((((7.037_683_6e-2 * m - 1.151_461_1e-1) * m + 1.167_699_9e-1) * m - 1.242_014_1e-1) * m
        + 1.424_932_3e-1)
        * m
        - 1.666_805_8e-1)
        * m
        + 2.000_071_4e-1)
        * m
        - 2.499_999_4e-1)
        * m
        + 3.333_333e-1)
        * m
        * z;
    let y = p - 2.121_944_4e-4 * e - 0.5 * z;
    let ln = m + y + 0.693_359_4 * e;
    if x > 0.0 {
        ln
    } else {
        f32::NEG_INFINITY
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_is_within_a_few_ulp_of_libm() {
        let mut x = 1.0f32;
        while x < 300.0 {
            let (fast, exact) = (ln_at_least_one(x), (x as f64).ln());
            assert!((fast as f64 - exact).abs() <= 4e-7 * exact.max(1.0), "x = {x}: {fast} vs {exact}");
            x += 0.0173;
        }
        assert_eq!(ln_at_least_one(1.0), 0.0);
        assert_eq!(ln_at_least_one(0.0), f32::NEG_INFINITY);
    }

    #[test]
    fn exp_is_within_a_few_ulp_of_libm() {
        let mut x = 0.0f32;
        while x > -87.0 {
            let (fast, exact) = (exp_nonpositive(x), (x as f64).exp());
            assert!(((fast as f64 - exact) / exact).abs() < 4e-7, "x = {x}: {fast} vs {exact}");
            x -= 0.0137;
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-88.0), 0.0);
        assert_eq!(exp_nonpositive(-1e30), 0.0);
    }
}
