//! Which AutoScale configs' passes run now (pure): each config gets its own pass, at most
//! one in flight per config, and requests that arrive during a pass schedule exactly one
//! more, right after it. One slow config (a create that takes minutes) thus never delays
//! another, and a burst of demand changes costs one extra pass, not one per change.
//!
//! A pass is *full* (the tick's: it also lists the cloud) or *demand* (a session, check-in or
//! save: plan, destroy, create). Requests coalesce into the larger kind.

use std::collections::{HashMap, HashSet};

/// What a pass does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PassKind {
    /// Plan, destroy and create, from the records alone.
    Demand,
    /// Also list the cloud: adopt, sweep orphans, find lost VMs, audit the config's tag.
    Full,
}

impl PassKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PassKind::Demand => "demand",
            PassKind::Full => "full",
        }
    }
}

/// The passes in flight, and those wanted again once they end.
#[derive(Debug, Default)]
pub struct PassScheduler {
    running: HashSet<String>,
    again: HashMap<String, PassKind>,
}

impl PassScheduler {
    /// A pass of `config` of `kind` is wanted. Answers true if it should start now; false if
    /// one is in flight (another, of the larger kind asked for, then runs once it ends).
    pub fn request(&mut self, config: &str, kind: PassKind) -> bool {
        if self.running.contains(config) {
            let again = self.again.entry(config.to_string()).or_insert(kind);
            *again = (*again).max(kind);
            false
        } else {
            self.running.insert(config.to_string());
            true
        }
    }

    /// The pass of `config` ended. Answers the kind of the one to start at once, if one was
    /// requested meanwhile; it is then in flight.
    pub fn finished(&mut self, config: &str) -> Option<PassKind> {
        let again = self.again.remove(config);
        if again.is_none() {
            self.running.remove(config);
        }
        again
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
        assert!(scheduler.request("a", PassKind::Demand));
        assert!(
            scheduler.request("b", PassKind::Full),
            "another config is not held up"
        );
        for _ in 0..5 {
            assert!(!scheduler.request("a", PassKind::Demand), "a is in flight");
        }
        assert_eq!(scheduler.in_flight(), 2);
        assert_eq!(
            scheduler.finished("a"),
            Some(PassKind::Demand),
            "exactly one more pass of a"
        );
        assert!(
            !scheduler.request("a", PassKind::Demand),
            "which is in flight now"
        );
        assert!(!scheduler.request("a", PassKind::Full));
        assert!(!scheduler.request("a", PassKind::Demand));
        assert_eq!(
            scheduler.finished("a"),
            Some(PassKind::Full),
            "requested during the second pass, of the larger kind"
        );
        assert_eq!(scheduler.finished("a"), None, "and no more");
        assert_eq!(scheduler.finished("b"), None);
        assert_eq!(scheduler.in_flight(), 0);
        assert!(
            scheduler.request("a", PassKind::Demand),
            "idle again: starts at once"
        );
    }
}
