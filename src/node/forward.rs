//! The one place where a broker message meets the cluster's wire form: a local publish becomes a
//! borrowed `ForwardRef` for the cluster core, a `ForwardedPublish` from a peer becomes a PUBLISH
//! for the broker core. The cores never import each other's types.

use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;

use crate::broker::{LocalPublish, RetainVersion, RetainedRecord};
use crate::cluster::wire::{ForwardRef, ForwardedPublish, RetainedItem, UserProps};
use crate::codec::{Publish, PublishProperties, QoS};

/// The wire form of a local publish, borrowed (message expiry counted down to `now`).
pub(crate) fn forward_ref(p: &LocalPublish, now: Duration) -> ForwardRef<'_> {
    let props = p.properties();
    ForwardRef {
        topic: p.topic(),
        payload: p.payload(),
        qos: p.qos() as u8,
        retain: p.retain(),
        expiry: p.remaining_expiry(now),
        payload_format_indicator: props.payload_format_indicator,
        response_topic: props.response_topic.as_deref(),
        correlation_data: props.correlation_data.as_deref(),
        user_properties: UserProps(&props.user_properties),
        content_type: props.content_type.as_deref(),
        retain_version: p.retain_version().map(|v| (v.hlc, v.origin)),
    }
}

/// The retained version a forwarded publish carries, if any.
pub(crate) fn retain_version(p: &ForwardedPublish) -> Option<RetainVersion> {
    p.retain_version
        .map(|(hlc, origin)| RetainVersion { hlc, origin })
}

/// A retained value of the local store in its wire form.
pub(crate) fn retained_item(r: RetainedRecord) -> RetainedItem {
    let p = r.publish;
    let props = p.properties;
    RetainedItem {
        version: (r.version.hlc, r.version.origin),
        publish: ForwardedPublish {
            topic: p.topic.to_string(),
            payload: p.payload.to_vec(),
            qos: p.qos as u8,
            retain: true,
            expiry: props.message_expiry_interval,
            payload_format_indicator: props.payload_format_indicator,
            response_topic: props.response_topic.map(|s| s.to_string()),
            correlation_data: props.correlation_data.map(|d| d.to_vec()),
            user_properties: props
                .user_properties
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            content_type: props.content_type.map(|s| s.to_string()),
            retain_version: None,
        },
    }
}

/// A peer's retained value for the local store; `None` for a QoS no flockmq peer sends.
pub(crate) fn retained_record(item: RetainedItem) -> Option<RetainedRecord> {
    let (hlc, origin) = item.version;
    Some(RetainedRecord {
        version: RetainVersion { hlc, origin },
        publish: into_publish(item.publish)?,
    })
}

/// A forwarded publish as the PUBLISH the broker takes; `None` for a QoS no flockmq peer sends.
pub(crate) fn into_publish(p: ForwardedPublish) -> Option<Publish> {
    let qos = QoS::from_u8(p.qos)?;
    Some(Publish {
        dup: false,
        qos,
        retain: p.retain,
        topic: ByteString::from(p.topic),
        packet_id: None,
        payload: Bytes::from(p.payload),
        properties: PublishProperties {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.expiry,
            response_topic: p.response_topic.map(ByteString::from),
            correlation_data: p.correlation_data.map(Bytes::from),
            user_properties: p
                .user_properties
                .into_iter()
                .map(|(k, v)| (ByteString::from(k), ByteString::from(v)))
                .collect(),
            content_type: p.content_type.map(ByteString::from),
            ..PublishProperties::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(qos: u8) -> ForwardedPublish {
        ForwardedPublish {
            topic: "t/a".into(),
            payload: b"remote".to_vec(),
            qos,
            retain: true,
            expiry: Some(30),
            payload_format_indicator: Some(1),
            response_topic: Some("r".into()),
            correlation_data: Some(b"c".to_vec()),
            user_properties: vec![("k".into(), "v".into())],
            content_type: Some("text/plain".into()),
            retain_version: Some((7, 9)),
        }
    }

    #[test]
    fn a_forwarded_publish_keeps_every_field() {
        let p = into_publish(forwarded(2)).expect("valid");
        assert_eq!(
            (&*p.topic, &p.payload[..], p.qos, p.retain),
            ("t/a", &b"remote"[..], QoS::ExactlyOnce, true)
        );
        let props = &p.properties;
        assert_eq!(props.message_expiry_interval, Some(30));
        assert_eq!(props.payload_format_indicator, Some(1));
        assert_eq!(props.response_topic.as_deref(), Some("r"));
        assert_eq!(props.correlation_data.as_deref(), Some(&b"c"[..]));
        assert_eq!(props.user_properties, vec![("k".into(), "v".into())]);
        assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    }

    #[test]
    fn a_retained_value_survives_the_wire_form() {
        let item = RetainedItem {
            version: (5, 6),
            publish: forwarded(1),
        };
        let record = retained_record(item.clone()).expect("valid");
        assert_eq!(record.version, RetainVersion { hlc: 5, origin: 6 });
        assert!(record.publish.retain);
        let back = retained_item(record);
        assert_eq!(back.version, item.version);
        assert_eq!(
            back.publish,
            ForwardedPublish {
                retain_version: None,
                ..item.publish
            }
        );
        assert_eq!(
            retain_version(&forwarded(0)),
            Some(RetainVersion { hlc: 7, origin: 9 })
        );
    }

    #[test]
    fn a_forwarded_publish_with_a_qos_above_2_is_refused() {
        assert!(into_publish(forwarded(3)).is_none());
    }
}
