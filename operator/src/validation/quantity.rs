//! Kubernetes resource quantities (`100m`, `64Mi`, `1e3`) as the API server parses them
//! (k8s.io/apimachinery `pkg/api/resource`): an optionally signed decimal number, then a
//! binary SI suffix (`Ki` … `Ei`), a decimal SI suffix (`n`, `u`, `m`, `k`, `M` … `E`) or a
//! decimal exponent (`e3`, `E-2`). A value the operator passed on unparsed would make the
//! API server refuse the pod or claim (422) on every pass.

use std::cmp::Ordering;

const SUFFIXES: [&str; 16] = [
    "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E",
];

/// The sign of quantity `q` (`Less` below zero, `Equal` zero, `Greater` above), or `None`
/// when `q` is not a quantity.
pub fn sign(q: &str) -> Option<Ordering> {
    let (negative, rest) = match q.as_bytes().first() {
        Some(b'-') => (true, &q[1..]),
        Some(b'+') => (false, &q[1..]),
        _ => (false, q),
    };
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(end);
    let digits = number.replace('.', "");
    let one_point = number.matches('.').count() <= 1;
    if digits.is_empty() || !one_point || !valid_suffix(suffix) {
        return None;
    }
    Some(match (digits.bytes().any(|d| d != b'0'), negative) {
        (false, _) => Ordering::Equal,
        (true, true) => Ordering::Less,
        (true, false) => Ordering::Greater,
    })
}

fn valid_suffix(s: &str) -> bool {
    if SUFFIXES.contains(&s) {
        return true;
    }
    let Some(exp) = s.strip_prefix(['e', 'E']) else {
        return false;
    };
    let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
    !exp.is_empty() && exp.bytes().all(|d| d.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_as_the_api_server_does() {
        for q in [
            "64Mi", "1Gi", "100m", "1", "0.5", "1.5Gi", "1e3", "2E-2", "+1k", ".5",
        ] {
            assert_eq!(sign(q), Some(Ordering::Greater), "{q}");
        }
        assert_eq!(sign("0"), Some(Ordering::Equal));
        assert_eq!(sign("0Mi"), Some(Ordering::Equal));
        assert_eq!(sign("-1Gi"), Some(Ordering::Less));
        for q in [
            "abc", "lots", "", "Mi", "1 Gi", "1GB", "1.2.3", "1e", "-", "1mi",
        ] {
            assert_eq!(sign(q), None, "{q:?}");
        }
    }
}
