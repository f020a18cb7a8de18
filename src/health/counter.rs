//! Rise/fall hysteresis of probe results. Pure.

/// Rise/fall hysteresis. Starts healthy; reports only transitions.
#[derive(Debug, Clone)]
pub struct ConsecutiveCounter {
    rise: u32,
    fall: u32,
    healthy: bool,
    streak: u32,
}

// === impl ConsecutiveCounter ===

impl ConsecutiveCounter {
    pub fn new(rise: u32, fall: u32, healthy: bool) -> ConsecutiveCounter {
        ConsecutiveCounter {
            rise: rise.max(1),
            fall: fall.max(1),
            healthy,
            streak: 0,
        }
    }

    /// Records one probe result; returns the new state when it changes.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.healthy { self.fall } else { self.rise };
        if self.streak >= needed {
            self.healthy = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_needs_fall_failures_then_rise_successes() {
        let mut c = ConsecutiveCounter::new(2, 3, true);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(true), None, "a success resets the failure streak");
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), Some(false));
        assert!(!c.is_healthy());
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(true), None);
        assert_eq!(c.record(false), None, "a failure resets the success streak");
        assert_eq!(c.record(true), None);
        assert_eq!(c.record(true), Some(true));
        assert!(c.is_healthy());
    }

    #[test]
    fn rise_and_fall_of_one_flip_at_once() {
        let mut c = ConsecutiveCounter::new(1, 1, true);
        assert_eq!(c.record(false), Some(false));
        assert_eq!(c.record(true), Some(true));
        let mut z = ConsecutiveCounter::new(0, 0, false);
        assert_eq!(z.record(true), Some(true), "zero is treated as one");
    }
}
