//! The message properties and `cloudEvents_*` headers of a charge.

use super::*;

impl AmqpSink {
    /// Made from the envelope's attributes, which it parses from the bytes
    /// once (`Envelope::attrs`), not on every publish. Everything comes from
    /// the bytes, so every attempt of a charge carries identical
    /// properties: the timestamp is the charge's own `time` (none when the
    /// event has no RFC 3339 time, never the publish time).
    pub(super) fn properties(&self, e: &Envelope) -> BasicProperties {
        let ce = e.attrs();
        let mut headers = FieldTable::default();
        let id = ce.id.as_deref().unwrap_or(&e.id);
        for (k, v) in [
            ("cloudEvents_specversion", ce.specversion.as_deref()),
            ("cloudEvents_id", Some(id)),
            ("cloudEvents_source", ce.source.as_deref()),
            ("cloudEvents_type", ce.ty.as_deref()),
            ("cloudEvents_subject", ce.subject.as_deref()),
            ("cloudEvents_time", ce.time.as_deref()),
        ] {
            if let Some(v) = v {
                headers.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
            }
        }
        let props = BasicProperties::default()
            .with_message_id(e.id.as_str().into())
            .with_content_type(CONTENT_TYPE.into())
            .with_delivery_mode(2)
            .with_app_id(APP_ID.into())
            .with_headers(headers);
        match ce.unix_time {
            Some(ts) => props.with_timestamp(ts),
            None => props,
        }
    }
}
