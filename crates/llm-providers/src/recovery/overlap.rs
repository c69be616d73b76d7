//! Removing what a continuation repeats of the answer delivered so far.

/// Removes what an instruction-form continuation repeats of the delivered text.
pub(crate) struct Overlap {
    pub(crate) delivered: String,
    pub(crate) pending: String,
}

/// How much continuation text is read before deciding that it diverged from the delivered
/// text and what of it overlaps.
pub(crate) const DECIDE_AFTER: usize = 64;
/// A shorter overlap between the end of the delivered text and the start of the
/// continuation is taken for coincidence, not repetition.
pub(crate) const MIN_OVERLAP: usize = 8;

impl Overlap {
    /// Feeds continuation text; `Some` is what goes to the caller once decided (the rest of
    /// the stream then passes unchanged).
    pub(crate) fn feed(&mut self, text: &str, at_end: bool) -> Option<String> {
        self.pending.push_str(text);
        let (delivered, pending) = (&self.delivered, &self.pending);
        if pending.starts_with(delivered.as_str()) {
            // It started the answer over: drop the part the caller has.
            return Some(pending[delivered.len()..].to_owned());
        }
        if delivered.starts_with(pending.as_str()) && !at_end {
            return None;
        }
        if pending.len() < DECIDE_AFTER && !at_end {
            return None;
        }
        // The longest start of the continuation that the delivered text ends with.
        let overlap = (MIN_OVERLAP..=pending.len().min(delivered.len()))
            .rev()
            .filter(|&k| pending.is_char_boundary(k))
            .find(|&k| delivered.ends_with(&pending[..k]))
            .unwrap_or(0);
        Some(pending[overlap..].to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlap(delivered: &str) -> Overlap {
        Overlap {
            delivered: delivered.to_owned(),
            pending: String::new(),
        }
    }

    #[test]
    fn a_continuation_that_starts_over_loses_the_repeated_part() {
        let mut o = overlap("Alfa-1 Bravo-2");
        assert_eq!(o.feed("Alfa-1", false), None);
        assert_eq!(
            o.feed(" Bravo-2 Charlie-3", false).as_deref(),
            Some(" Charlie-3")
        );
    }

    #[test]
    fn a_continuation_repeating_the_last_words_loses_them() {
        let mut o = overlap("The capital of France is Paris, a city");
        let rest = o.feed(
            " is Paris, a city on the Seine. It has many museums and long avenues to walk.",
            false,
        );
        assert_eq!(
            rest.as_deref(),
            Some(" on the Seine. It has many museums and long avenues to walk.")
        );
    }

    #[test]
    fn a_clean_continuation_passes_whole_and_short_coincidences_stay() {
        let mut o = overlap("one two three");
        let text = " four five six seven eight nine ten eleven twelve thirteen fourteen";
        assert_eq!(o.feed(text, false).as_deref(), Some(text));
        let mut o = overlap("ends with e");
        assert_eq!(o.feed("e and more", true).as_deref(), Some("e and more"));
    }
}
