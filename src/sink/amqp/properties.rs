//! The message properties and `cloudEvents_*` headers of a charge.

use super::*;

/// The CloudEvents attributes copied into `cloudEvents_*` headers.
#[derive(Deserialize, Default)]
pub(super) struct CeAttrs {
    pub(super) specversion: Option<serde_json::Value>,
    pub(super) id: Option<serde_json::Value>,
    pub(super) source: Option<serde_json::Value>,
    #[serde(rename = "type")]
    pub(super) ty: Option<serde_json::Value>,
    pub(super) subject: Option<serde_json::Value>,
    pub(super) time: Option<serde_json::Value>,
}

pub(super) fn as_text(v: &Option<serde_json::Value>) -> Option<&str> {
    v.as_ref().and_then(|v| v.as_str())
}

impl AmqpSink {
    pub(super) fn properties(&self, e: &Envelope) -> BasicProperties {
        let ce: CeAttrs = serde_json::from_slice(&e.payload).unwrap_or_default();
        let mut headers = FieldTable::default();
        let id = as_text(&ce.id).unwrap_or(&e.id);
        for (k, v) in [
            ("cloudEvents_specversion", as_text(&ce.specversion)),
            ("cloudEvents_id", Some(id)),
            ("cloudEvents_source", as_text(&ce.source)),
            ("cloudEvents_type", as_text(&ce.ty)),
            ("cloudEvents_subject", as_text(&ce.subject)),
            ("cloudEvents_time", as_text(&ce.time)),
        ] {
            if let Some(v) = v {
                headers.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
            }
        }
        // The charge's own time, so every attempt carries identical
        // properties; publish time only when the event has none.
        let ts = as_text(&ce.time)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .and_then(|t| u64::try_from(t.timestamp()).ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            });
        BasicProperties::default()
            .with_message_id(e.id.as_str().into())
            .with_content_type(CONTENT_TYPE.into())
            .with_delivery_mode(2)
            .with_timestamp(ts)
            .with_app_id(APP_ID.into())
            .with_headers(headers)
    }
}
