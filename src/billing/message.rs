//! The message as billing completes it: `data.enrichment` and
//! `data.papercut` (PaperCut's answers), `data.billing` (who pays), and the
//! ledger entry read back from it.

use serde_json::Value;

use super::enrich::ChargeEnrichment;
use super::{BillingError, BillingInfo, Entry};
use crate::store::NewCharge;

/// Parse a rendered message.
pub(super) fn parse(c: &NewCharge) -> Result<Value, BillingError> {
    serde_json::from_slice(&c.payload).map_err(|e| BillingError::Message {
        id: c.id.clone(),
        reason: e.to_string(),
    })
}

/// Fix a charge's bytes: its message as completed.
pub(super) fn store(c: &mut NewCharge, event: &Value) -> Result<(), BillingError> {
    c.payload = serde_json::to_vec(event).map_err(|e| BillingError::Message {
        id: c.id.clone(),
        reason: e.to_string(),
    })?;
    Ok(())
}

/// Put `data.enrichment` (and `data.papercut` when something was read) in
/// the event.
pub(super) fn set_enrichment(event: &mut Value, e: &ChargeEnrichment<'_>) {
    if let Some(data) = event.get_mut("data").and_then(Value::as_object_mut) {
        data.insert("enrichment".into(), Value::String(e.label().into()));
        if let Some(p) = e.value() {
            data.insert("papercut".into(), p);
        }
    }
}

/// Put `data.billing` in the event.
pub(super) fn set_billing(event: &mut Value, info: &BillingInfo) {
    if let Some(data) = event.get_mut("data").and_then(Value::as_object_mut) {
        data.insert("billing".into(), info.to_value());
    }
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The ledger entry of a charge, from its message.
pub(super) fn entry_of(c: &NewCharge, event: &Value, source: &str) -> Result<Entry, BillingError> {
    let bad = |reason: &str| BillingError::Message {
        id: c.id.clone(),
        reason: reason.into(),
    };
    let data = event.get("data").ok_or_else(|| bad("no data"))?;
    let time = str_at(event, "time").ok_or_else(|| bad("no time"))?;
    // The time carries the source zone's offset for that instant, so its
    // date part is the local day, DST or not.
    let day = time.get(..10).ok_or_else(|| bad("time too short"))?;
    Ok(Entry {
        id: c.id.clone(),
        source: source.to_string(),
        time: time.to_string(),
        day: day.to_string(),
        user: str_at(data, "user").unwrap_or_default().to_string(),
        account: c.account.clone(),
        account_type: c.account_type.clone(),
        status: str_at(data, "status").unwrap_or("charged").to_string(),
        amount: c.amount.clone(),
        cost: str_at(data, "cost").map(str::to_string),
        currency: c.currency.clone(),
        customer_id: None,
        team_id: None,
        transaction_id: str_at(data, "transaction_id").map(str::to_string),
    })
}

/// The user named in a rendered message (`data.user`).
pub(super) fn user_of(payload: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Ev {
        data: Data,
    }
    #[derive(serde::Deserialize)]
    struct Data {
        #[serde(default)]
        user: String,
    }
    serde_json::from_slice::<Ev>(payload)
        .map(|e| e.data.user)
        .unwrap_or_default()
}
