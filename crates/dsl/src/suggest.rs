//! "Did you mean ...?": near matches for a misspelt name, by edit distance and
//! by prefix (`Freq` is far from `F` and `frequency` by edits, but obviously a
//! short form of `frequency`).

/// Edit distance between two strings, by characters, case-insensitive:
/// insertions, deletions, substitutions and swaps of adjacent characters
/// (optimal string alignment), so the common `adn` for `and` is one edit.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().flat_map(char::to_lowercase).collect();
    let b: Vec<char> = b.chars().flat_map(char::to_lowercase).collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// How close `candidate` is to `name`, or `None` if it is not a plausible typo.
///
/// Plausible: an edit distance of at most a third of the name's length (at least
/// 1), one being a prefix of the other with at least 3 characters in common, or
/// a shared start of at least 4 characters and half the name.
fn closeness(name: &str, candidate: &str) -> Option<usize> {
    // Very long inputs are not typos of short names; skip the quadratic work.
    if name.len() > 64 {
        return None;
    }
    let (n, c) = (name.to_lowercase(), candidate.to_lowercase());
    let distance = edit_distance(&n, &c);
    let limit = (n.chars().count() / 3).max(1);
    if distance <= limit {
        return Some(distance);
    }
    let shorter = n.len().min(c.len());
    if shorter >= 3 && (c.starts_with(&n) || n.starts_with(&c)) {
        return Some(limit + 1);
    }
    // A long shared start is a strong hint too (`champs` for `champions`).
    let common = n.chars().zip(c.chars()).take_while(|(a, b)| a == b).count();
    if common >= 4 && common * 2 >= n.chars().count() {
        return Some(limit + 2);
    }
    None
}

/// Up to three candidates close to `name`, best first, ties in given order.
pub(crate) fn similar<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let mut scored: Vec<(usize, usize, &str)> = candidates
        .into_iter()
        .enumerate()
        .filter(|(_, c)| *c != name)
        .filter_map(|(i, c)| closeness(name, c).map(|d| (d, i, c)))
        .collect();
    scored.sort();
    let mut out: Vec<String> = Vec::new();
    for (_, _, c) in scored {
        if !out.iter().any(|o| o == c) {
            out.push(c.to_owned());
        }
        if out.len() == 3 {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("Freq", "freq"), 0);
        assert_eq!(edit_distance("adn", "and"), 1);
    }

    #[test]
    fn prefixes_and_typos_are_similar() {
        assert_eq!(similar("Freq", ["R", "F", "frequency"]), vec!["frequency"]);
        assert_eq!(
            similar("lifecyle", ["lifecycle", "last_seen"]),
            vec!["lifecycle"]
        );
        assert!(similar("country", ["R", "F", "M", "recency"]).is_empty());
    }
}
