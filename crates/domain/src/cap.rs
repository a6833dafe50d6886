//! One cap for every message the guard sends.
//!
//! SNS refuses a message over 256 KB, and so does EventBridge an entry: a
//! message that grows with the fleet (an organization's sweep has a row per
//! account-region) must be cut to fit, keep what matters most, and count what
//! it left out. [`fit`] does that for any message made of lists: the caller
//! renders the message from how many items of each list to show, and `fit`
//! finds the most that fit. The caller orders each list most important first
//! (failures first), and the lists by which gives way first.

/// SNS's limit for one message, and EventBridge's for one entry.
pub const MESSAGE_LIMIT: usize = 256 * 1024;

/// What [`fit`] settled on.
#[derive(Debug, PartialEq, Eq)]
pub struct Fitted {
    pub text: String,
    /// How many items of each list the text shows.
    pub shown: Vec<usize>,
}

/// Renders with as many items of each list as fit in `limit` bytes. `lens`
/// are the lists' lengths, in the order they give way: the first shrinks
/// (possibly to none) before the second shrinks at all. Returns `None` when
/// even showing no item of any list is over the limit: the caller then sends
/// a message of fixed size instead.
///
/// Renders O(lists × log(len)) times.
pub fn fit(
    limit: usize,
    lens: &[usize],
    mut render: impl FnMut(&[usize]) -> String,
) -> Option<Fitted> {
    let mut shown = lens.to_vec();
    let text = render(&shown);
    if text.len() <= limit {
        return Some(Fitted { text, shown });
    }
    for i in 0..lens.len() {
        // Would it fit with none of this list (and all of those after)?
        shown[i] = 0;
        let none = render(&shown);
        if none.len() > limit {
            continue; // This list goes entirely; the next gives way too.
        }
        // It would: find the most of this list that still fits.
        let (mut lo, mut hi, mut best) = (0, lens[i], none);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            shown[i] = mid;
            let t = render(&shown);
            if t.len() <= limit {
                lo = mid;
                best = t;
            } else {
                hi = mid;
            }
        }
        shown[i] = lo;
        return Some(Fitted { text: best, shown });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(lists: &[Vec<String>]) -> impl FnMut(&[usize]) -> String + '_ {
        |shown: &[usize]| {
            lists
                .iter()
                .zip(shown)
                .map(|(l, &n)| l[..n].join(",") + &format!("+{}", l.len() - n))
                .collect::<Vec<_>>()
                .join("|")
        }
    }

    #[test]
    fn what_fits_is_sent_whole() {
        let lists = vec![vec!["a".to_string(); 3], vec!["b".to_string(); 2]];
        let f = fit(100, &[3, 2], render(&lists)).unwrap();
        assert_eq!(f.shown, vec![3, 2]);
        assert_eq!(f.text, "a,a,a+0|b,b+0");
    }

    #[test]
    fn the_first_list_gives_way_first_and_as_little_as_needed() {
        let lists = vec![vec!["aaaa".to_string(); 100], vec!["b".to_string(); 10]];
        let f = fit(60, &[100, 10], render(&lists)).unwrap();
        assert_eq!(f.shown[1], 10, "the second list is whole");
        assert!(f.text.len() <= 60, "{}", f.text.len());
        // One more item would not fit.
        let mut more = f.shown.clone();
        more[0] += 1;
        assert!(render(&lists)(&more).len() > 60);
    }

    #[test]
    fn a_later_list_shrinks_once_the_earlier_ones_are_gone() {
        let lists = vec![vec!["aaaa".to_string(); 100], vec!["bb".to_string(); 100]];
        let f = fit(40, &[100, 100], render(&lists)).unwrap();
        assert_eq!(f.shown[0], 0);
        assert!(f.shown[1] > 0 && f.shown[1] < 100, "{:?}", f.shown);
        assert!(f.text.len() <= 40);
    }

    #[test]
    fn nothing_fits_is_said() {
        assert_eq!(fit(3, &[1], |_| "too long".to_string()), None);
    }
}
