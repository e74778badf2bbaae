//! Who may do what on the embedded MQTT broker (sans-IO): the principal a connection proved,
//! the topics it may publish to and subscribe to, the session name it gets at the broker, and
//! the retained-message quota.
//!
//! - A **node** proves its mesh identity with its certificate (`mqtts://`, `[mqtt]
//!   mesh_identity` in agent.toml). It subscribes only to the triggers of the functions
//!   deployed to it and publishes only to their MQTT outputs.
//! - A **user** (`spillway mqtt user add`) gives a name and password and gets the filters the
//!   operator gave it.
//! - **Anonymous** clients exist only when the operator turned them on, on a loopback listener
//!   (`spillway up`'s first try): they may do anything except reach a node's or user's session.
//!
//! Sessions are named by principal (`n:NODE:ID`, `u:USER:ID`, `a:ID`, the client's id in hex:
//! rumqttd refuses ids with `/`, `+`, `#` or `$`), so a client id can never reach another
//! principal's persistent session, whatever id it sends. Node and user names have no `:`.

use spillway_proto::fdl::{check_topic, topic_matches};

/// Who a connection proved to be.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    Node(String),
    User(String),
    Anonymous,
}

impl Principal {
    /// The session name at the broker for `client_id` sent by this principal.
    pub fn session(&self, client_id: &str) -> String {
        let id = hex::encode(client_id);
        match self {
            Self::Node(n) => format!("n:{n}:{id}"),
            Self::User(u) => format!("u:{u}:{id}"),
            Self::Anonymous => format!("a:{id}"),
        }
    }

    /// For logs and metrics.
    pub fn describe(&self) -> String {
        match self {
            Self::Node(n) => format!("node {n}"),
            Self::User(u) => format!("MQTT user {u}"),
            Self::Anonymous => "an anonymous client".into(),
        }
    }
}

/// Topic filters a principal may publish to and subscribe to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

impl Grants {
    /// Everything (anonymous clients on a loopback first try).
    pub fn everything() -> Self {
        Self {
            publish: vec!["#".into()],
            subscribe: vec!["#".into()],
        }
    }

    pub fn may_publish(&self, topic: &str) -> bool {
        check_topic(topic, false).is_ok() && self.publish.iter().any(|f| topic_matches(f, topic))
    }

    /// Whether every topic `filter` can match is one some subscribe grant matches.
    pub fn may_subscribe(&self, filter: &str) -> bool {
        check_topic(filter, true).is_ok() && self.subscribe.iter().any(|g| covers(g, filter))
    }
}

/// Whether grant filter `grant` matches every topic that `filter` matches.
pub fn covers(grant: &str, filter: &str) -> bool {
    // `$` topics (broker internals) are only reached by filters that name them.
    if filter.starts_with('$') != grant.starts_with('$') {
        return false;
    }
    let mut f = filter.split('/');
    for g in grant.split('/') {
        match (g, f.next()) {
            ("#", _) => return true,
            // `+` in the grant covers one level of anything but a multi-level wildcard.
            ("+", Some(level)) if level != "#" => {}
            (g, Some(level)) if g == level && g != "+" => {}
            _ => return false,
        }
    }
    f.next().is_none()
}

/// Retained messages: at most `max_topics` topics hold one, each at most `max_bytes` long, so
/// no client can grow the broker's memory with retained messages.
#[derive(Debug, Clone)]
pub struct RetainedQuota {
    topics: std::collections::HashSet<String>,
    max_topics: usize,
    max_bytes: usize,
}

/// Why a retained message is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetainRefusal {
    TooLarge { bytes: usize, max: usize },
    TooMany { max: usize },
}

impl std::fmt::Display for RetainRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge { bytes, max } => write!(
                f,
                "a retained message of {bytes} bytes is over the broker's {max} ([mqtt] max_retained_bytes)"
            ),
            Self::TooMany { max } => write!(
                f,
                "the broker already keeps retained messages on {max} topics ([mqtt] max_retained); clear some with an empty retained message"
            ),
        }
    }
}

impl RetainedQuota {
    pub fn new(max_topics: usize, max_bytes: usize) -> Self {
        Self {
            topics: Default::default(),
            max_topics,
            max_bytes,
        }
    }

    /// Admits a retained message (an empty one clears the topic and is always admitted).
    pub fn admit(&mut self, topic: &str, bytes: usize) -> Result<(), RetainRefusal> {
        if bytes == 0 {
            self.topics.remove(topic);
            return Ok(());
        }
        if bytes > self.max_bytes {
            return Err(RetainRefusal::TooLarge {
                bytes,
                max: self.max_bytes,
            });
        }
        if !self.topics.contains(topic) {
            if self.topics.len() >= self.max_topics {
                return Err(RetainRefusal::TooMany {
                    max: self.max_topics,
                });
            }
            self.topics.insert(topic.to_owned());
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_node_may_subscribe_to_its_triggers_and_publish_to_its_outputs_only() {
        let g = Grants {
            publish: vec!["alerts/fire".into()],
            subscribe: vec!["cameras/+/frames".into()],
        };
        assert!(g.may_subscribe("cameras/+/frames"));
        assert!(g.may_subscribe("cameras/cam1/frames"));
        assert!(!g.may_subscribe("#"));
        assert!(!g.may_subscribe("cameras/#"));
        assert!(!g.may_subscribe("alerts/fire"));
        assert!(g.may_publish("alerts/fire"));
        assert!(!g.may_publish("cameras/cam1/frames"));
        assert!(!g.may_publish("alerts/+"));
    }

    #[test]
    fn dollar_topics_are_not_covered_by_wildcards() {
        assert!(!covers("#", "$SYS/#"));
        assert!(!covers("+/x", "$SYS/x"));
        assert!(covers("$SYS/#", "$SYS/broker"));
    }

    #[test]
    fn sessions_of_different_principals_never_share_a_name() {
        let id = "spillway-edge-1";
        let names = [
            Principal::Node("edge-1".into()).session(id),
            Principal::User("edge-1".into()).session(id),
            Principal::Anonymous.session(id),
            // A user whose chosen id imitates a node's session name.
            Principal::User("n".into()).session("edge-1:spillway-edge-1"),
            Principal::Anonymous.session("n:edge-1:spillway-edge-1"),
        ];
        for (i, a) in names.iter().enumerate() {
            assert!(!a.contains(['/', '+', '#', '$']), "{a}");
            for b in &names[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn retained_messages_are_bounded_in_size_and_topics_and_clearing_frees_a_place() {
        let mut q = RetainedQuota::new(2, 10);
        assert_eq!(
            q.admit("a", 11),
            Err(RetainRefusal::TooLarge { bytes: 11, max: 10 })
        );
        assert_eq!(q.admit("a", 5), Ok(()));
        assert_eq!(q.admit("b", 5), Ok(()));
        assert_eq!(q.admit("a", 7), Ok(()), "replacing is not a new topic");
        assert_eq!(q.admit("c", 1), Err(RetainRefusal::TooMany { max: 2 }));
        assert_eq!(q.admit("a", 0), Ok(()));
        assert_eq!(q.admit("c", 1), Ok(()));
        assert_eq!(q.len(), 2);
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("+".to_owned()),
            Just("#".to_owned()),
            Just("$x".to_owned()),
        ]
    }

    fn filter() -> impl Strategy<Value = String> {
        proptest::collection::vec(level(), 1..5).prop_filter_map("valid filter", |levels| {
            let f = levels.join("/");
            spillway_proto::fdl::check_topic(&f, true).ok().map(|_| f)
        })
    }

    fn topic() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![Just("a"), Just("b"), Just("c"), Just("$x")],
            1..5,
        )
        .prop_map(|l| l.join("/"))
    }

    proptest! {
        /// Soundness: a covered subscription never delivers a topic the grant does not match.
        #[test]
        fn a_covered_filter_matches_only_topics_the_grant_matches(
            grant in filter(), requested in filter(), t in topic()
        ) {
            if covers(&grant, &requested) && topic_matches(&requested, &t) {
                prop_assert!(topic_matches(&grant, &t), "{grant} covers {requested} but not {t}");
            }
        }

        #[test]
        fn every_filter_covers_itself(f in filter()) {
            prop_assert!(covers(&f, &f));
        }
    }
}
