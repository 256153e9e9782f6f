//! "Did you mean" for names users mistype.

pub fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The closest candidate, if it is close enough to be a plausible typo. Ties go to the one
/// sharing the longest prefix, since names in one file tend to share theirs (`cpu_…`).
pub fn did_you_mean<'a>(
    wrong: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (wrong.chars().count() / 2).max(2);
    candidates
        .into_iter()
        .map(|c| {
            let prefix = wrong
                .chars()
                .zip(c.chars())
                .take_while(|(a, b)| a == b)
                .count();
            (levenshtein(wrong, c), usize::MAX - prefix, c)
        })
        .filter(|&(d, _, _)| d <= limit)
        .min()
        .map(|(_, _, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("same", "same"), 0);
    }

    #[test]
    fn seed_typo_gets_the_posdecoder_hint() {
        let nodes = ["cpu_posdecoder", "resnet50"];
        assert_eq!(
            did_you_mean("cpu_posprocess", nodes),
            Some("cpu_posdecoder")
        );
    }

    #[test]
    fn far_names_get_no_hint() {
        assert_eq!(
            did_you_mean("classifier", ["cpu_decoder", "resnet50"]),
            None
        );
    }
}
