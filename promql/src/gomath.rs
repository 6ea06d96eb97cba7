//! Go's `math` functions where Go computes a different last bit than the C
//! library: Prometheus evaluates with Go's, and `promtool test rules`
//! compares values exactly, so a rule test that passes there must pass here.
//! The algorithms are Go's (Cephes and Hart & Cheney coefficients), in Rust.

use std::f64::consts::{FRAC_PI_2, FRAC_PI_4, LOG2_E, LOG10_2};

/// `x = frac × 2^exp` with `frac` in [0.5, 1) (Go's `math.Frexp`).
fn frexp(x: f64) -> (f64, i32) {
    if x == 0.0 || x.is_nan() || x.is_infinite() {
        return (x, 0);
    }
    let (mut x, mut exp) = (x, 0i32);
    if x.abs() < f64::MIN_POSITIVE {
        x *= (1u64 << 52) as f64;
        exp = -52;
    }
    let bits = x.to_bits();
    exp += ((bits >> 52) & 0x7ff) as i32 - 1022;
    let frac = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (frac, exp)
}

/// Go's `math.Log` (FreeBSD's algorithm, which Go's amd64 assembly follows
/// operation for operation).
pub fn ln(x: f64) -> f64 {
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    const L1: f64 = 6.666_666_666_666_735e-1;
    const L2: f64 = 3.999_999_999_940_942e-1;
    const L3: f64 = 2.857_142_874_366_239e-1;
    const L4: f64 = 2.222_219_843_214_978_4e-1;
    const L5: f64 = 1.818_357_216_161_805e-1;
    const L6: f64 = 1.531_383_769_920_937_3e-1;
    const L7: f64 = 1.479_819_860_511_658_6e-1;
    if x.is_nan() || x == f64::INFINITY {
        return x;
    }
    if x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    let (mut f1, mut ki) = frexp(x);
    if f1 < std::f64::consts::SQRT_2 / 2.0 {
        f1 *= 2.0;
        ki -= 1;
    }
    let f = f1 - 1.0;
    let k = f64::from(ki);
    let s = f / (2.0 + f);
    let s2 = s * s;
    let s4 = s2 * s2;
    let t1 = s2 * (L1 + s4 * (L3 + s4 * (L5 + s4 * L7)));
    let t2 = s4 * (L2 + s4 * (L4 + s4 * L6));
    let r = t1 + t2;
    let hfsq = 0.5 * f * f;
    k * LN2_HI - ((hfsq - (s * (hfsq + r) + k * LN2_LO)) - f)
}

/// Go's `math.Log2`: exact for powers of two.
pub fn log2(x: f64) -> f64 {
    let (frac, exp) = frexp(x);
    if frac == 0.5 {
        return f64::from(exp - 1);
    }
    ln(frac) * LOG2_E + f64::from(exp)
}

/// Go's `math.Log10`.
pub fn log10(x: f64) -> f64 {
    log2(x) * LOG10_2
}

/// Go's `math.Exp` on amd64: Go's assembly (Shibata's method, from SLEEF):
/// reduce by k·ln 2 (k rounded to nearest), evaluate a Taylor series on
/// r/16, square back four times, scale by 2^k.
/// Go takes the fused multiply-add path when the CPU has FMA, so this does too.
pub fn exp(x: f64) -> f64 {
    const LN2U: f64 = 0.693_147_180_559_662_956_511_601_805_686_950_683_593_75;
    const LN2L: f64 = 0.282_352_905_630_315_771_225_884_481_750_134_360_255_254_120_68e-12;
    const OVERFLOW: f64 = 7.097_827_128_933_84e2;
    const T: [f64; 8] = [
        1.0,
        0.5,
        1.666_666_666_666_666_6e-1,
        4.166_666_666_666_666_4e-2,
        8.333_333_333_333_333e-3,
        1.388_888_888_888_889e-3,
        1.984_126_984_126_984e-4,
        2.480_158_730_158_73e-5,
    ];
    if x.is_nan() || x == f64::INFINITY {
        return x;
    }
    if x == f64::NEG_INFINITY {
        return 0.0;
    }
    if x > OVERFLOW {
        return f64::INFINITY;
    }
    let k = (LOG2_E * x).round_ties_even() as i32;
    let kf = f64::from(k);
    let fma = fma_available();
    let mut r = if fma {
        let r = (-LN2U).mul_add(kf, x);
        (-LN2L).mul_add(kf, r)
    } else {
        let r = x - LN2U * kf;
        r - LN2L * kf
    };
    r *= 0.0625;
    let mut p = T[7];
    for t in T[..7].iter().rev() {
        p = if fma { p.mul_add(r, *t) } else { p * r + t };
    }
    r *= p;
    for _ in 0..4 {
        r *= r + 2.0;
    }
    r += 1.0;
    let biased = k + 0x3ff;
    if biased <= 0 {
        if biased < -52 {
            return 0.0;
        }
        // A subnormal result, scaled in two steps so each factor is normal.
        return r * f64::from_bits(((biased + 0x3fe) as u64) << 52) * f64::from_bits(1u64 << 52);
    }
    if biased >= 0x7ff {
        return f64::INFINITY;
    }
    r * f64::from_bits((biased as u64) << 52)
}

fn fma_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Go's `math.Sinh`.
pub fn sinh(x: f64) -> f64 {
    const P0: f64 = -0.630_767_364_049_771_7e6;
    const P1: f64 = -0.899_127_202_203_950_9e5;
    const P2: f64 = -0.289_421_135_598_956_4e4;
    const P3: f64 = -0.263_056_321_339_749_7e2;
    const Q0: f64 = -0.630_767_364_049_771_7e6;
    const Q1: f64 = 0.152_151_737_879_002e5;
    const Q2: f64 = -0.173_678_953_558_233_7e3;
    let (x, negative) = if x < 0.0 { (-x, true) } else { (x, false) };
    let t = if x > 21.0 {
        exp(x) * 0.5
    } else if x > 0.5 {
        let ex = exp(x);
        (ex - 1.0 / ex) * 0.5
    } else {
        let sq = x * x;
        (((P3 * sq + P2) * sq + P1) * sq + P0) * x / (((sq + Q2) * sq + Q1) * sq + Q0)
    };
    if negative { -t } else { t }
}

/// Go's `math.Cosh`.
pub fn cosh(x: f64) -> f64 {
    let x = x.abs();
    if x > 21.0 {
        return exp(x) * 0.5;
    }
    let ex = exp(x);
    (ex + 1.0 / ex) * 0.5
}

fn xatan(x: f64) -> f64 {
    const P0: f64 = -8.750_608_600_031_904e-1;
    const P1: f64 = -1.615_753_718_733_365e1;
    const P2: f64 = -7.500_855_792_314_705e1;
    const P3: f64 = -1.228_866_684_490_136e2;
    const P4: f64 = -6.485_021_904_942_025e1;
    const Q0: f64 = 2.485_846_490_142_306_3e1;
    const Q1: f64 = 1.650_270_098_316_988_5e2;
    const Q2: f64 = 4.328_810_604_912_902_7e2;
    const Q3: f64 = 4.853_903_996_359_137e2;
    const Q4: f64 = 1.945_506_571_482_614e2;
    let z = x * x;
    let z = z * ((((P0 * z + P1) * z + P2) * z + P3) * z + P4)
        / (((((z + Q0) * z + Q1) * z + Q2) * z + Q3) * z + Q4);
    x * z + x
}

fn satan(x: f64) -> f64 {
    const MOREBITS: f64 = 6.123_233_995_736_766e-17;
    const TAN3PIO8: f64 = 2.414_213_562_373_095;
    if x <= 0.66 {
        return xatan(x);
    }
    if x > TAN3PIO8 {
        return FRAC_PI_2 - xatan(1.0 / x) + MOREBITS;
    }
    FRAC_PI_4 + xatan((x - 1.0) / (x + 1.0)) + 0.5 * MOREBITS
}

/// Go's `math.Atan`.
pub fn atan(x: f64) -> f64 {
    if x == 0.0 {
        return x;
    }
    if x > 0.0 { satan(x) } else { -satan(-x) }
}

/// Go's `math.Asin`.
pub fn asin(x: f64) -> f64 {
    if x == 0.0 {
        return x;
    }
    let (x, negative) = if x < 0.0 { (-x, true) } else { (x, false) };
    if x > 1.0 {
        return f64::NAN;
    }
    let t = (1.0 - x * x).sqrt();
    let t = if x > 0.7 {
        FRAC_PI_2 - satan(t / x)
    } else {
        satan(x / t)
    };
    if negative { -t } else { t }
}

/// Go's `math.Acos`.
pub fn acos(x: f64) -> f64 {
    FRAC_PI_2 - asin(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_go_where_libm_does_not() {
        // Values Go 1.19's math package gives (Prometheus 2.42's results).
        assert_eq!(log2(9.0), 3.1699250014423126);
        assert_eq!(log10(9.0), 0.954242509439325);
        assert_eq!(log2(8.0), 3.0);
        assert_eq!(sinh(2.25), 4.69116830589833);
        assert_eq!(cosh(2.25), 4.7965675304601945);
        assert_eq!(asin(0.0625), 0.0625407617964914);
        assert_eq!(acos(0.0625), 1.508255564998405);
        assert_eq!(acos(0.375), 1.1863995522992574);
        assert_eq!(exp(9.0), 8103.083927575384);
        assert_eq!(exp(1.0), std::f64::consts::E);
        assert_eq!(exp(-1.0), 0.36787944117144233);
        assert_eq!(ln(9.0), 2.1972245773362196);
        assert_eq!(ln(0.5), -std::f64::consts::LN_2);
        assert_eq!(frexp(0.0), (0.0, 0));
        assert_eq!(frexp(1.0), (0.5, 1));
        assert_eq!(frexp(f64::MIN_POSITIVE / 4.0), (0.5, -1023));
    }
}
