//! Exact decimal parsing for money: the source digits, never a float.

/// Parses decimal text (`12`, `-3.5`, `1.25e2`) into an integer scaled by
/// `10^scale`. Fails when the value needs more than `scale` decimals (money is
/// exact to the cent, so rounding would silently change it) or has more than
/// `precision` digits.
pub fn parse_decimal(text: &str, scale: u32, precision: u32) -> Result<i128, String> {
    let t = text.trim();
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (
            &body[..i],
            body[i + 1..]
                .parse::<i32>()
                .map_err(|_| format!("`{text}` is not a number"))?,
        ),
        None => (body, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("`{text}` is not a number"));
    }
    // value = digits * 10^(exp - frac.len()); we want value * 10^scale.
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    let shift = exp as i64 - frac.len() as i64 + scale as i64;
    let (digits, shift) = if shift < 0 {
        let cut = (-shift) as usize;
        let keep = digits.len().saturating_sub(cut);
        if digits[keep..].bytes().any(|b| b != b'0') {
            return Err(format!("`{text}` has more than {scale} decimal places"));
        }
        (&digits[..keep], 0)
    } else {
        (digits, shift)
    };
    if digits.len() as i64 + shift > precision as i64 {
        return Err(format!("`{text}` is too large"));
    }
    let mut v: i128 = 0;
    for b in digits.bytes() {
        v = v * 10 + (b - b'0') as i128;
    }
    for _ in 0..shift {
        v *= 10;
    }
    Ok(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::parse_decimal;

    #[test]
    fn exact_cents() {
        assert_eq!(parse_decimal("12.5", 2, 18), Ok(1250));
        assert_eq!(parse_decimal("-0.01", 2, 18), Ok(-1));
        assert_eq!(parse_decimal("7", 2, 18), Ok(700));
        assert_eq!(parse_decimal("1.250", 2, 18), Ok(125));
        assert_eq!(parse_decimal("1.25e2", 2, 18), Ok(12500));
        assert_eq!(parse_decimal("125e-2", 2, 18), Ok(125));
        assert_eq!(parse_decimal("0", 2, 18), Ok(0));
        assert_eq!(parse_decimal(".5", 2, 18), Ok(50));
    }

    #[test]
    fn refuses_what_it_cannot_keep_exactly() {
        assert!(
            parse_decimal("1.005", 2, 18)
                .unwrap_err()
                .contains("decimal places")
        );
        assert!(
            parse_decimal("1e30", 2, 18)
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse_decimal("abc", 2, 18)
                .unwrap_err()
                .contains("not a number")
        );
        assert!(parse_decimal("", 2, 18).is_err());
        assert!(parse_decimal("1.2.3", 2, 18).is_err());
    }
}
