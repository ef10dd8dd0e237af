//! Which AutoScale configs' passes run now (pure): each config gets its own pass, at most
//! one in flight per config, and a request that arrives during a pass schedules exactly one
//! more, right after it. One slow config (a create that takes minutes) thus never delays
//! another, and a burst of demand changes costs one extra pass, not one per change.

use std::collections::HashSet;

/// The passes in flight, and those wanted again once they end.
#[derive(Debug, Default)]
pub struct PassScheduler {
    running: HashSet<String>,
    again: HashSet<String>,
}

impl PassScheduler {
    /// A pass of `config` is wanted. Answers true if it should start now; false if one is
    /// in flight (another then runs once that one ends).
    pub fn request(&mut self, config: &str) -> bool {
        if self.running.contains(config) {
            self.again.insert(config.to_string());
            false
        } else {
            self.running.insert(config.to_string());
            true
        }
    }

    /// The pass of `config` ended. Answers true if another must start at once (it was
    /// requested meanwhile); it is then in flight.
    pub fn finished(&mut self, config: &str) -> bool {
        if self.again.remove(config) {
            true
        } else {
            self.running.remove(config);
            false
        }
    }

    /// Passes in flight.
    pub fn in_flight(&self) -> usize {
        self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_per_config_and_requests_during_it_coalesce_into_one_more() {
        let mut scheduler = PassScheduler::default();
        assert!(scheduler.request("a"));
        assert!(scheduler.request("b"), "another config is not held up");
        for _ in 0..5 {
            assert!(!scheduler.request("a"), "a is in flight");
        }
        assert_eq!(scheduler.in_flight(), 2);
        assert!(scheduler.finished("a"), "exactly one more pass of a");
        assert!(!scheduler.request("a"), "which is in flight now");
        assert!(scheduler.finished("a"), "requested during the second pass");
        assert!(!scheduler.finished("a"), "and no more");
        assert!(!scheduler.finished("b"));
        assert_eq!(scheduler.in_flight(), 0);
        assert!(scheduler.request("a"), "idle again: starts at once");
    }
}
