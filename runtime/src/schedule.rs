//! The learning rate at a step, from the plan's schedule segments.

use pexc_compiler::lower::plan::LrSegment;

/// The rate at stage-global step `step`: the segment that holds it; before the first, the
/// first's start; after the last, the last's end.
pub fn lr_at(segments: &[LrSegment], step: u64) -> f64 {
    if let Some(s) = segments.iter().find(|s| s.start <= step && step < s.end) {
        return s.at(step);
    }
    match (segments.first(), segments.last()) {
        (Some(first), _) if step < first.start => first.from,
        (_, Some(last)) => last.to,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(shape: &str, start: u64, end: u64, from: f64, to: f64) -> LrSegment {
        LrSegment {
            shape: shape.into(),
            start,
            end,
            from,
            to,
        }
    }

    #[test]
    fn warmup_then_cosine_at_the_boundaries() {
        let s = [
            seg("warmup", 0, 10, 0.0, 1.0),
            seg("cosine", 10, 110, 1.0, 0.0),
        ];
        assert_eq!(lr_at(&s, 0), 0.0);
        assert!((lr_at(&s, 5) - 0.5).abs() < 1e-12);
        // The peak where warmup ends and cosine starts.
        assert!((lr_at(&s, 10) - 1.0).abs() < 1e-12);
        // Half-way through the cosine: half the peak.
        assert!((lr_at(&s, 60) - 0.5).abs() < 1e-12);
        assert!(lr_at(&s, 109) < 1e-3);
        // Past the end: the final value.
        assert_eq!(lr_at(&s, 500), 0.0);
    }

    #[test]
    fn linear_and_constant() {
        let s = [
            seg("constant", 0, 4, 2.0, 2.0),
            seg("linear", 4, 8, 2.0, 1.0),
        ];
        assert_eq!(lr_at(&s, 3), 2.0);
        assert!((lr_at(&s, 6) - 1.5).abs() < 1e-12);
    }
}
