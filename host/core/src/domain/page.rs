//! Pages of a list in a stable order (`?limit=&after=`): the items after a cursor, at most a
//! limit, and the cursor of the next page when more remain.

/// The most items one page holds.
pub const MAX_PAGE: usize = 1000;

/// One page of `items` in the order of `key`: those after `after`, at most `limit`, with the
/// key of the last one when more remain (the next page's `after`). Costs O(n) to pass over
/// the items plus O(limit log limit) to order the page, whatever the page's position.
pub fn page<'a, T, K: Ord + Clone>(
    items: impl Iterator<Item = &'a T>,
    key: impl Fn(&T) -> K,
    after: Option<&K>,
    limit: usize,
) -> (Vec<&'a T>, Option<K>) {
    let mut rest: Vec<(K, &T)> = items
        .map(|item| (key(item), item))
        .filter(|(k, _)| after.is_none_or(|after| k > after))
        .collect();
    let more = rest.len() > limit;
    if more && limit > 0 {
        rest.select_nth_unstable_by(limit - 1, |a, b| a.0.cmp(&b.0));
    }
    rest.truncate(limit);
    rest.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let next = if more {
        rest.last().map(|(k, _)| k.clone())
    } else {
        None
    };
    (rest.into_iter().map(|(_, item)| item).collect(), next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_each_other_in_key_order_and_survive_a_removed_cursor() {
        let items: Vec<u32> = vec![7, 3, 9, 1, 5, 8, 2];
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = page(items.iter(), |i| *i, after.as_ref(), 3);
            assert!(page.len() <= 3);
            seen.extend(page.into_iter().copied());
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, [1, 2, 3, 5, 7, 8, 9]);
        // The last page ends the list: no cursor, even when it is full.
        let (last, next) = page(items.iter(), |i| *i, Some(&5), 3);
        assert_eq!((last, next), (vec![&7, &8, &9], None));
        // A cursor whose item is gone still marks a place in the order.
        let (after_gone, _) = page(items.iter(), |i| *i, Some(&4), 2);
        assert_eq!(after_gone, [&5, &7]);
        assert_eq!(page(items.iter(), |i| *i, Some(&9), 3), (vec![], None));
    }
}
