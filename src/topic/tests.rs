//! Tests for topic validation, matching, the topic trie and the retained store.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeSet;

/// The spec's matching rule written the slow, obvious way, as the oracle for the trees.
fn brute_matches(filter: &str, topic: &str) -> bool {
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    if topic.starts_with('$') && matches!(f[0], "+" | "#") {
        return false;
    }
    for i in 0.. {
        match (f.get(i), t.get(i)) {
            (Some(&"#"), _) => return true,
            (Some(&"+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
    false
}

const MATCH_TABLE: &[(&str, &str, bool)] = &[
    // exact
    ("a/b", "a/b", true),
    ("a/b", "a/c", false),
    ("a/b", "a", false),
    ("a", "a/b", false),
    ("a/b", "a/b/c", false),
    // `+` matches exactly one level, including an empty one
    ("a/+", "a/b", true),
    ("a/+", "a/", true),
    ("a/+", "a", false),
    ("a/+", "a/b/c", false),
    ("+", "a", true),
    ("+", "", true),
    ("+", "/a", false),
    ("+/+", "/a", true),
    ("+/+", "/", true),
    ("a/+/c", "a//c", true),
    ("+/b/+", "x/b/y", true),
    ("+/b/+", "x/c/y", false),
    // `#` matches the parent and any depth below it
    ("a/#", "a", true),
    ("a/#", "a/", true),
    ("a/#", "a/b", true),
    ("a/#", "a/b/c", true),
    ("a/#", "b", false),
    ("a/#", "ab", false),
    ("a/b/#", "a", false),
    ("#", "a", true),
    ("#", "a/b/c", true),
    ("#", "/", true),
    ("#", "", true),
    ("+/#", "a", true),
    ("+/#", "a/b", true),
    ("/#", "/", true),
    ("/#", "", true), // `#` matches the (empty) parent level
    // empty levels are levels
    ("a//b", "a//b", true),
    ("a//b", "a/b", false),
    ("/a", "/a", true),
    ("/a", "a", false),
    ("a/", "a/", true),
    ("a/", "a", false),
    ("/+", "/x", true),
    ("/+", "x", false),
    // `$` topics are invisible to filters starting with a wildcard
    ("#", "$SYS/x", false),
    ("#", "$SYS", false),
    ("+", "$SYS", false),
    ("+/x", "$SYS/x", false),
    ("+/#", "$SYS/x", false),
    ("$SYS/#", "$SYS/x", true),
    ("$SYS/#", "$SYS", true),
    ("$SYS/+", "$SYS/x", true),
    ("$SYS/x", "$SYS/x", true),
    ("$SYS", "$SYS", true),
    ("a/#", "a/$x", true),
    ("a/+", "a/$x", true),
    ("#", "a$", true),
    ("+/$x", "a/$x", true),
];

#[test]
fn oracle_agrees_with_match_table() {
    for &(filter, topic, expected) in MATCH_TABLE {
        assert_eq!(
            brute_matches(filter, topic),
            expected,
            "{filter} vs {topic}"
        );
    }
}

#[test]
fn trie_matches_per_table() {
    for &(filter, topic, expected) in MATCH_TABLE {
        let mut trie = TopicTrie::new();
        trie.insert(filter, 1u8, ());
        let mut seen = Vec::new();
        trie.for_each_match(topic, |f, entries| {
            seen.push((f.to_string(), entries.len()))
        });
        let want = if expected {
            vec![(filter.to_string(), 1)]
        } else {
            vec![]
        };
        assert_eq!(seen, want, "{filter} vs {topic}");
        assert_eq!(trie.has_match(topic), expected, "{filter} vs {topic}");
    }
}

#[test]
fn trie_with_all_table_filters_matches_each_filter_once() {
    let mut trie = TopicTrie::new();
    let filters: BTreeSet<&str> = MATCH_TABLE.iter().map(|&(f, _, _)| f).collect();
    for f in &filters {
        trie.insert(f, 0u8, ());
    }
    let topics: BTreeSet<&str> = MATCH_TABLE.iter().map(|&(_, t, _)| t).collect();
    for topic in topics {
        let mut seen = Vec::new();
        trie.for_each_match(topic, |f, _| seen.push(f.to_string()));
        seen.sort();
        let want: Vec<String> = filters
            .iter()
            .filter(|f| brute_matches(f, topic))
            .map(|f| f.to_string())
            .collect();
        assert_eq!(seen, want, "topic {topic}");
    }
}

#[test]
fn retained_matches_per_table() {
    for &(filter, topic, expected) in MATCH_TABLE {
        let mut store = RetainedStore::new();
        store.insert(topic, 7u32);
        let mut seen = Vec::new();
        store.retain_matching(filter, |t, m| {
            seen.push((t.to_string(), *m));
            true
        });
        let want = if expected {
            vec![(topic.to_string(), 7)]
        } else {
            vec![]
        };
        assert_eq!(seen, want, "{filter} vs {topic}");
        assert_eq!(store.len(), 1);
    }
}

#[test]
fn topic_name_validation() {
    let table: &[(&str, usize, bool)] = &[
        ("a", 8, true),
        ("a/b/c", 8, true),
        ("/", 8, true),
        ("a//b", 8, true),
        ("$SYS/x", 8, true),
        (" ", 8, true),
        ("", 8, false),
        ("a/+", 8, false),
        ("a/#", 8, false),
        ("a+b", 8, false),
        ("a#", 8, false),
        ("a\0b", 8, false),
        ("a/b/c", 3, true),
        ("a/b/c/d", 3, false),
        ("//", 3, true),
        ("///", 3, false),
    ];
    for &(name, max, want) in table {
        assert_eq!(valid_topic_name(name, max), want, "{name:?} max {max}");
    }
    assert!(valid_topic_name(&"a".repeat(65_535), 8));
    assert!(!valid_topic_name(&"a".repeat(65_536), 8));
}

#[test]
fn topic_filter_validation() {
    let table: &[(&str, usize, bool)] = &[
        ("a", 8, true),
        ("#", 8, true),
        ("+", 8, true),
        ("a/#", 8, true),
        ("a/+/b", 8, true),
        ("+/+/#", 8, true),
        ("/", 8, true),
        ("a//b", 8, true),
        ("$SYS/#", 8, true),
        ("$share/g/a", 8, true),
        ("", 8, false),
        ("a/#/b", 8, false),
        ("#/a", 8, false),
        ("a#", 8, false),
        ("a/b#", 8, false),
        ("a/#b", 8, false),
        ("a+", 8, false),
        ("a/+b", 8, false),
        ("++", 8, false),
        ("##", 8, false),
        ("a/\0", 8, false),
        ("a/b/#", 3, true),
        ("a/b/c/#", 3, false),
        ("+/+/+", 3, true),
        ("+/+/+/+", 3, false),
    ];
    for &(filter, max, want) in table {
        assert_eq!(
            valid_topic_filter(filter, max),
            want,
            "{filter:?} max {max}"
        );
    }
    assert!(valid_topic_filter(&"a".repeat(65_535), 8));
    assert!(!valid_topic_filter(&"a".repeat(65_536), 8));
}

#[test]
fn subscription_filter_parsing() {
    use SubscriptionFilter::{Plain, Shared};
    let table: &[(&str, Option<SubscriptionFilter<'_>>)] = &[
        ("a/b", Some(Plain("a/b"))),
        ("#", Some(Plain("#"))),
        ("$shared/x", Some(Plain("$shared/x"))),
        ("$share", Some(Plain("$share"))),
        ("$SYS/#", Some(Plain("$SYS/#"))),
        ("a/#/b", None),
        ("", None),
        (
            "$share/g/f",
            Some(Shared {
                group: "g",
                filter: "f",
            }),
        ),
        (
            "$share/g/a/+/#",
            Some(Shared {
                group: "g",
                filter: "a/+/#",
            }),
        ),
        (
            "$share/g/#",
            Some(Shared {
                group: "g",
                filter: "#",
            }),
        ),
        (
            "$share/g//",
            Some(Shared {
                group: "g",
                filter: "/",
            }),
        ),
        (
            "$share/g/$SYS/x",
            Some(Shared {
                group: "g",
                filter: "$SYS/x",
            }),
        ),
        ("$share/g", None),
        ("$share/", None),
        ("$share//f", None),
        ("$share/g/", None),
        ("$share/g+/f", None),
        ("$share/+/f", None),
        ("$share/#/f", None),
        ("$share/g#/f", None),
        ("$share/g/a/#/b", None),
        ("$share/g/a+", None),
    ];
    for &(s, want) in table {
        assert_eq!(parse_subscription_filter(s, 8), want, "{s:?}");
    }
    assert_eq!(
        parse_subscription_filter("$share/g/a/b/c", 3),
        Some(Shared {
            group: "g",
            filter: "a/b/c"
        }),
        "the level limit applies to the inner filter, not to the $share prefix"
    );
    assert_eq!(parse_subscription_filter("$share/g/a/b/c/d", 3), None);
}

#[test]
fn insert_replaces_and_counts_pairs() {
    let mut trie = TopicTrie::new();
    assert!(trie.is_empty());
    assert_eq!(trie.insert("a/+", 1u32, "x"), None);
    assert_eq!(trie.insert("a/+", 2, "y"), None);
    assert_eq!(trie.insert("a/#", 1, "z"), None);
    assert_eq!(trie.len(), 3);
    assert_eq!(trie.insert("a/+", 1, "w"), Some("x"));
    assert_eq!(trie.len(), 3);
    let under = trie
        .get("a/+")
        .map(|m| m.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
    assert_eq!(under, Some(vec![(1, "w"), (2, "y")]));
    assert_eq!(
        trie.get("a"),
        None,
        "get does not match wildcards or prefixes"
    );
    assert_eq!(trie.get("a/b"), None);
}

#[test]
fn removing_everything_prunes_every_node() {
    let mut trie = TopicTrie::new();
    let filters = [
        "a/b/c", "a/+/c", "a/#", "#", "+", "/", "a//b", "a/b", "$SYS/#",
    ];
    for (i, f) in filters.iter().enumerate() {
        trie.insert(f, i, ());
        trie.insert(f, 100 + i, ());
    }
    assert_eq!(trie.len(), 2 * filters.len());
    assert!(trie.node_count() > 0);
    assert_eq!(trie.remove("a/b/c", &99), None, "absent key");
    assert_eq!(trie.remove("a/b/d", &0), None, "absent filter");
    assert_eq!(trie.remove("a/b/c/d", &0), None, "absent deeper filter");
    assert_eq!(trie.len(), 2 * filters.len());
    for (i, f) in filters.iter().enumerate() {
        assert_eq!(trie.remove(f, &i), Some(()));
        assert_eq!(trie.remove(f, &i), None, "second removal of {f}");
        assert_eq!(trie.remove(f, &(100 + i)), Some(()));
    }
    assert_eq!(trie.len(), 0);
    assert!(trie.is_empty());
    assert_eq!(trie.node_count(), 0);
    assert!(!trie.has_match("a/b/c"));
}

#[test]
fn removing_a_leaf_keeps_the_branch_other_filters_need() {
    let mut trie = TopicTrie::new();
    trie.insert("a/b", 1u8, ());
    trie.insert("a/b/c/d", 1, ());
    let before = trie.node_count();
    trie.remove("a/b/c/d", &1);
    assert_eq!(
        trie.node_count(),
        before - 2,
        "c and d are pruned, a and b stay"
    );
    assert!(trie.has_match("a/b"));
    assert!(!trie.has_match("a/b/c/d"));
    trie.remove("a/b", &1);
    assert_eq!(trie.node_count(), 0);
}

#[test]
fn entries_are_sorted_by_filter_then_key() {
    let mut trie = TopicTrie::new();
    for (f, k) in [
        ("b", 2u8),
        ("a/#", 3),
        ("a/+", 1),
        ("a", 9),
        ("a", 1),
        ("#", 5),
        ("a-b", 4),
    ] {
        trie.insert(f, k, ());
    }
    let got = trie.entries();
    let mut want = got.clone();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(got.len(), 7);
    assert_eq!(got.first(), Some(&("#".to_string(), 5)));
    assert_eq!(
        got.get(1..3),
        Some(&[("a".to_string(), 1), ("a".to_string(), 9)][..])
    );
}

#[test]
fn overlapping_filters_are_each_visited_once_in_a_stable_order() {
    let mut trie = TopicTrie::new();
    for f in ["t/+/x", "t/#", "t/a/x", "+/a/+", "#"] {
        trie.insert(f, f.len(), ());
    }
    let mut first = Vec::new();
    trie.for_each_match("t/a/x", |f, _| first.push(f.to_string()));
    let mut second = Vec::new();
    trie.clone()
        .for_each_match("t/a/x", |f, _| second.push(f.to_string()));
    assert_eq!(first, second);
    let mut sorted = first.clone();
    sorted.sort();
    assert_eq!(sorted, ["#", "+/a/+", "t/#", "t/+/x", "t/a/x"]);
}

#[test]
fn seed_example_routes_to_the_right_nodes() {
    // DESIGN §1: client1@node1 `t/+/x, t/+/y`; node2 `t/#`; node3 `t/+/x, t/a`.
    let mut routes: TopicTrie<&str, ()> = TopicTrie::new();
    for (f, n) in [
        ("t/+/x", "n1"),
        ("t/+/y", "n1"),
        ("t/#", "n2"),
        ("t/+/x", "n3"),
        ("t/a", "n3"),
    ] {
        routes.insert(f, n, ());
    }
    let mut nodes = BTreeSet::new();
    routes.for_each_match("t/a", |_, entries| nodes.extend(entries.keys().copied()));
    assert_eq!(nodes.into_iter().collect::<Vec<_>>(), ["n2", "n3"]);
}

#[test]
fn retained_insert_replace_remove_and_prune() {
    let mut store = RetainedStore::new();
    assert_eq!(store.insert("a/b", 1u32), None);
    assert_eq!(store.insert("a", 2), None);
    assert_eq!(store.insert("$SYS/x", 3), None);
    assert_eq!(store.insert("a/b", 4), Some(1));
    assert_eq!(store.len(), 3);
    assert_eq!(store.get("a/b"), Some(&4));
    assert_eq!(store.get("a/+"), None);
    assert_eq!(store.remove("a/c"), None);
    assert_eq!(store.remove("a/b/c"), None);
    assert_eq!(store.remove("a"), Some(2));
    assert_eq!(store.remove("a"), None);
    assert_eq!(
        store.get("a/b"),
        Some(&4),
        "removing the parent keeps the child"
    );
    assert_eq!(store.remove("a/b"), Some(4));
    assert_eq!(store.remove("$SYS/x"), Some(3));
    assert!(store.is_empty());
    assert_eq!(store.node_count(), 0);
}

#[test]
fn retained_visit_returning_false_drops_and_prunes() {
    let mut store = RetainedStore::new();
    for (t, m) in [
        ("a/b/c", 1u32),
        ("a/b", 2),
        ("a/x/c", 3),
        ("b", 4),
        ("$SYS/a", 5),
    ] {
        store.insert(t, m);
    }
    let mut seen = Vec::new();
    store.retain_matching("a/#", |t, m| {
        seen.push(t.to_string());
        m % 2 == 0
    });
    assert_eq!(seen, ["a/b", "a/b/c", "a/x/c"], "topic order, parent first");
    assert_eq!(store.len(), 3);
    assert_eq!(store.get("a/b/c"), None);
    assert_eq!(store.get("a/b"), Some(&2));
    let mut all = Vec::new();
    store.for_each(|t, _| all.push(t.to_string()));
    assert_eq!(all, ["$SYS/a", "a/b", "b"]);
    store.retain_matching("#", |_, _| false);
    assert_eq!(store.len(), 1, "# does not reach $SYS");
    store.retain_matching("$SYS/+", |_, _| false);
    assert!(store.is_empty());
    assert_eq!(store.node_count(), 0);
}

fn level() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "b", "$s", ""])
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..5).prop_map(|levels| levels.join("/"))
}

fn filter() -> impl Strategy<Value = String> {
    let filter_level = prop::sample::select(vec!["a", "b", "$s", "", "+"]);
    (prop::collection::vec(filter_level, 0..4), any::<bool>()).prop_filter_map(
        "filters have at least one level",
        |(mut levels, hash)| {
            if hash {
                levels.push("#");
            }
            (!levels.is_empty()).then(|| levels.join("/"))
        },
    )
}

proptest! {
    #[test]
    fn trie_matches_like_brute_force(
        ops in prop::collection::vec((filter(), 0u8..3, any::<bool>()), 0..40),
        topics in prop::collection::vec(topic(), 1..10),
    ) {
        let mut trie = TopicTrie::new();
        let mut model: BTreeMap<(String, u8), u32> = BTreeMap::new();
        for (i, (f, key, add)) in ops.iter().enumerate() {
            let data = u32::try_from(i).unwrap_or(u32::MAX);
            if *add {
                prop_assert_eq!(trie.insert(f, *key, data), model.insert((f.clone(), *key), data));
            } else {
                prop_assert_eq!(trie.remove(f, key), model.remove(&(f.clone(), *key)));
            }
            prop_assert_eq!(trie.len(), model.len());
        }
        let want_entries: Vec<(String, u8)> = model.keys().cloned().collect();
        prop_assert_eq!(trie.entries(), want_entries);
        for t in &topics {
            let mut got = Vec::new();
            trie.for_each_match(t, |f, entries| {
                got.extend(entries.iter().map(|(k, d)| (f.to_string(), *k, *d)));
            });
            got.sort();
            let want: Vec<(String, u8, u32)> = model
                .iter()
                .filter(|((f, _), _)| brute_matches(f, t))
                .map(|((f, k), d)| (f.clone(), *k, *d))
                .collect();
            prop_assert_eq!(trie.has_match(t), !want.is_empty());
            prop_assert_eq!(got, want, "topic {}", t);
        }
        for (f, k) in model.keys() {
            prop_assert!(trie.remove(f, k).is_some());
        }
        prop_assert!(trie.is_empty());
        prop_assert_eq!(trie.node_count(), 0);
    }

    #[test]
    fn retained_matches_like_brute_force(
        ops in prop::collection::vec((topic(), any::<bool>()), 0..30),
        filters in prop::collection::vec(filter(), 1..6),
        drop_mod in 1u32..4,
    ) {
        let mut store = RetainedStore::new();
        let mut model: BTreeMap<Vec<String>, (String, u32)> = BTreeMap::new();
        for (i, (t, add)) in ops.iter().enumerate() {
            let levels: Vec<String> = t.split('/').map(str::to_string).collect();
            let msg = u32::try_from(i).unwrap_or(u32::MAX);
            if *add {
                let old = model.insert(levels, (t.clone(), msg)).map(|(_, m)| m);
                prop_assert_eq!(store.insert(t, msg), old);
            } else {
                let old = model.remove(&levels).map(|(_, m)| m);
                prop_assert_eq!(store.remove(t), old);
            }
            prop_assert_eq!(store.len(), model.len());
        }
        for f in &filters {
            let mut got = Vec::new();
            store.retain_matching(f, |t, m| {
                got.push((t.to_string(), *m));
                m % drop_mod != 0
            });
            // The model is keyed by levels, so its order is the store's topic order.
            let want: Vec<(String, u32)> =
                model.values().filter(|(t, _)| brute_matches(f, t)).cloned().collect();
            prop_assert_eq!(got, want, "filter {}", f);
            model.retain(|_, (t, m)| !brute_matches(f, t) || *m % drop_mod != 0);
            prop_assert_eq!(store.len(), model.len());
        }
        let mut all = Vec::new();
        store.for_each(|t, m| all.push((t.to_string(), *m)));
        let want_all: Vec<(String, u32)> = model.values().cloned().collect();
        prop_assert_eq!(all, want_all);
        store.retain_matching("#", |_, _| false);
        store.retain_matching("$s/#", |_, _| false);
        prop_assert!(store.is_empty());
        prop_assert_eq!(store.node_count(), 0);
    }
}
