//! Where a group lives on the server: the names of its streams, consumers and subjects, and the
//! subject transform that puts each key in its partition. Pure functions of the bucket, the
//! group, the key pattern and the number of partitions, so every member derives the same ones.

/// The priority group every partition consumer has; members pull with it.
pub(crate) const PRIORITY_GROUP: &str = "members";

/// The first token of the copy's subjects: `p.<partition>.<key>`.
const PARTITION_PREFIX: &str = "p";

/// The names of one group's server objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupLayout {
    pub(crate) bucket: String,
    pub(crate) group: String,
    /// The mirror of the bucket's stream, keys put in partitions.
    pub(crate) stream: String,
    /// The Key-Value bucket of the members' heartbeats.
    pub(crate) members_bucket: String,
    /// The stream of the changes given up.
    pub(crate) dead_stream: String,
    /// The Key-Value bucket counting, per partition, the deliveries of its change in hand that
    /// were handed back without a call (see `kv::group::handbacks`).
    pub(crate) handbacks_bucket: String,
}

impl GroupLayout {
    pub(crate) fn new(bucket: &str, group: &str) -> Self {
        let stream = format!("KVG_{bucket}_{group}");
        Self {
            bucket: bucket.to_owned(),
            group: group.to_owned(),
            members_bucket: format!("{stream}_members"),
            dead_stream: format!("{stream}_dead"),
            handbacks_bucket: format!("{stream}_handbacks"),
            stream,
        }
    }

    /// The durable consumer of partition `partition`.
    pub(crate) fn consumer(partition: u16) -> String {
        format!("p{partition}")
    }

    /// The filter of partition `partition`'s consumer.
    pub(crate) fn partition_filter(partition: u16) -> String {
        format!("{PARTITION_PREFIX}.{partition}.>")
    }

    /// The subjects of the dead-letter stream.
    pub(crate) fn dead_subjects(&self) -> String {
        format!("$KVG.{}.{}.dead.>", self.bucket, self.group)
    }

    /// Where the change given up for `key` is kept.
    pub(crate) fn dead_subject(&self, key: &str) -> String {
        format!("$KVG.{}.{}.dead.{key}", self.bucket, self.group)
    }

    /// The key of a dead letter's subject.
    pub(crate) fn key_of_dead<'a>(&self, subject: &'a str) -> Option<&'a str> {
        subject.strip_prefix(&format!("$KVG.{}.{}.dead.", self.bucket, self.group))
    }

    /// The mirror's subject transform for a watch filter (`orders.*`, `audit.>`, `>`): source
    /// `$KV.<bucket>.<filter>`, destination `p.{{partition(N)}}.<filter>`, each `*` carried
    /// over by position and a final `>` as is. `partition(N)` without token indexes hashes
    /// the whole subject, so keys of any depth land in a fixed partition.
    pub(crate) fn transform(&self, filter: &str, partitions: u16) -> (String, String) {
        let mut wildcard = 0;
        let tokens: Vec<String> = filter
            .split('.')
            .map(|token| match token {
                "*" => {
                    wildcard += 1;
                    format!("{{{{wildcard({wildcard})}}}}")
                }
                other => other.to_owned(),
            })
            .collect();
        (
            format!("$KV.{}.{filter}", self.bucket),
            format!(
                "{PARTITION_PREFIX}.{{{{partition({partitions})}}}}.{}",
                tokens.join(".")
            ),
        )
    }
}

/// The partition and key of a copy's subject (`p.3.orders.42` gives 3 and `orders.42`).
pub(crate) fn split_subject(subject: &str) -> Option<(u16, &str)> {
    let rest = subject.strip_prefix(PARTITION_PREFIX)?.strip_prefix('.')?;
    let (partition, key) = rest.split_once('.')?;
    Some((partition.parse().ok()?, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let layout = GroupLayout::new("shop", "billing");
        assert_eq!(layout.stream, "KVG_shop_billing");
        assert_eq!(layout.members_bucket, "KVG_shop_billing_members");
        assert_eq!(layout.dead_stream, "KVG_shop_billing_dead");
        assert_eq!(layout.handbacks_bucket, "KVG_shop_billing_handbacks");
        assert_eq!(GroupLayout::consumer(3), "p3");
        assert_eq!(GroupLayout::partition_filter(3), "p.3.>");
        assert_eq!(
            layout.dead_subject("orders.1"),
            "$KVG.shop.billing.dead.orders.1"
        );
        assert_eq!(
            layout.key_of_dead("$KVG.shop.billing.dead.orders.1"),
            Some("orders.1")
        );
    }

    #[test]
    fn transforms() {
        let layout = GroupLayout::new("shop", "billing");
        assert_eq!(
            layout.transform("orders.*", 16),
            (
                "$KV.shop.orders.*".to_owned(),
                "p.{{partition(16)}}.orders.{{wildcard(1)}}".to_owned()
            )
        );
        assert_eq!(
            layout.transform("a.*.b.*.>", 4).1,
            "p.{{partition(4)}}.a.{{wildcard(1)}}.b.{{wildcard(2)}}.>"
        );
        assert_eq!(layout.transform(">", 2).1, "p.{{partition(2)}}.>");
    }

    #[test]
    fn subjects() {
        assert_eq!(split_subject("p.3.orders.42"), Some((3, "orders.42")));
        assert_eq!(split_subject("p.x.orders"), None);
        assert_eq!(split_subject("q.3.orders"), None);
        assert_eq!(split_subject("p.3"), None);
    }
}
