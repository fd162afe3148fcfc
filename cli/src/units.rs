//! Strict parsers for the durations, sizes and CPU counts of service flags. Each error names
//! the value and says what would be accepted.

use anyhow::{anyhow, bail, Result};

/// A duration as milliseconds: a decimal number with a unit `ms`, `s`, `m` or `h` (`500ms`,
/// `1.5s`, `2m`); a bare number is seconds. Fractions below a millisecond are refused.
pub(crate) fn parse_duration_ms(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => bail!("{text:?} is not a duration: use a number with ms, s, m or h (e.g. 500ms, 10s)"),
    };
    let ms = decimal_times(number, per_unit).ok_or_else(|| {
        anyhow!("{text:?} is not a duration: use a number with ms, s, m or h (e.g. 500ms, 10s)")
    })?;
    Ok(ms)
}

/// A size in bytes: a decimal number with an optional binary unit `k`, `m`, `g`, `t`
/// (also `kb`/`kib`, any case: 1k = 1024 bytes, as Docker's `--memory`); a bare number is
/// bytes.
pub(crate) fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.to_ascii_lowercase();
    let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => bail!("{text:?} is not a size: use a number with k, M, G or T (e.g. 256M, 1G)"),
    };
    if unit == "ib" {
        bail!("{text:?} is not a size: use a number with k, M, G or T (e.g. 256M, 1G)");
    }
    decimal_times(number, 1u64 << shift).ok_or_else(|| {
        anyhow!("{text:?} is not a size: use a number with k, M, G or T (e.g. 256M, 1G)")
    })
}

/// A CPU count as nano-CPUs: a decimal number with at most 9 decimals (`0.5`, `2`).
pub(crate) fn parse_cpus(text: &str) -> Result<u64> {
    let t = text.trim();
    decimal_times(t, 1_000_000_000)
        .ok_or_else(|| anyhow!("{text:?} is not a CPU count: use a number such as 0.5 or 2"))
}

/// `number × scale` for a plain decimal (`12`, `1.5`, `.25`), exactly; `None` when it is not
/// one, overflows, or keeps a fraction of the unit.
fn decimal_times(number: &str, scale: u64) -> Option<u64> {
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    if !whole
        .bytes()
        .chain(frac.bytes())
        .all(|b| b.is_ascii_digit())
        || frac.len() > 18
    {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut total = whole.checked_mul(scale)?;
    if !frac.is_empty() {
        let denominator = 10u128.pow(frac.len() as u32);
        let numerator = u128::from(frac.parse::<u64>().ok()?) * u128::from(scale);
        if numerator % denominator != 0 {
            return None;
        }
        total = total.checked_add(u64::try_from(numerator / denominator).ok()?)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("500ms").ok(), Some(500));
        assert_eq!(parse_duration_ms("10s").ok(), Some(10_000));
        assert_eq!(parse_duration_ms("1.5s").ok(), Some(1_500));
        assert_eq!(parse_duration_ms("2m").ok(), Some(120_000));
        assert_eq!(parse_duration_ms("1h").ok(), Some(3_600_000));
        assert_eq!(parse_duration_ms("3").ok(), Some(3_000));
        assert_eq!(parse_duration_ms("0").ok(), Some(0));
        for bad in [
            "",
            "s",
            "1.5ms",
            "-1s",
            "10 s",
            "1d",
            "1.2.3s",
            "99999999999999999999s",
        ] {
            let err = parse_duration_ms(bad).expect_err(bad).to_string();
            assert!(err.contains("is not a duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M").ok(), Some(256 << 20));
        assert_eq!(parse_size("256m").ok(), Some(256 << 20));
        assert_eq!(parse_size("1G").ok(), Some(1 << 30));
        assert_eq!(parse_size("1GiB").ok(), Some(1 << 30));
        assert_eq!(parse_size("512kb").ok(), Some(512 << 10));
        assert_eq!(parse_size("1.5g").ok(), Some(3 << 29));
        assert_eq!(parse_size("4096").ok(), Some(4096));
        assert_eq!(parse_size("0").ok(), Some(0));
        for bad in [
            "",
            "M",
            "12X",
            "1.5",
            "-1M",
            "1 M",
            "ib",
            "1ib",
            "99999999999T",
        ] {
            let err = parse_size(bad).expect_err(bad).to_string();
            assert!(err.contains("is not a size"), "{bad}: {err}");
        }
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("0.5").ok(), Some(500_000_000));
        assert_eq!(parse_cpus("2").ok(), Some(2_000_000_000));
        assert_eq!(parse_cpus(".25").ok(), Some(250_000_000));
        assert_eq!(parse_cpus("0.000000001").ok(), Some(1));
        for bad in ["", "x", "1,5", "0.0000000001", "-1", "."] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
    }
}
