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

/// [`entry_of`] without a `serde_json::Value` of the whole message (which
/// cost more than parsing the line did): only the fields the entry takes,
/// borrowed where unescaped. For charges whose message billing leaves as is.
pub(super) fn entry_of_bytes(c: &NewCharge, source: &str) -> Result<Entry, BillingError> {
    use std::borrow::Cow;
    #[derive(serde::Deserialize)]
    struct Ev<'a> {
        #[serde(borrow)]
        time: Cow<'a, str>,
        #[serde(borrow)]
        data: Data<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Data<'a> {
        #[serde(borrow, default)]
        user: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        status: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        cost: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        transaction_id: Option<Cow<'a, str>>,
    }
    let bad = |reason: String| BillingError::Message {
        id: c.id.clone(),
        reason,
    };
    let ev: Ev = serde_json::from_slice(&c.payload).map_err(|e| bad(e.to_string()))?;
    let day = ev
        .time
        .get(..10)
        .ok_or_else(|| bad("time too short".into()))?;
    Ok(Entry {
        id: c.id.clone(),
        source: source.to_string(),
        time: ev.time.to_string(),
        day: day.to_string(),
        user: ev.data.user.map(Cow::into_owned).unwrap_or_default(),
        account: c.account.clone(),
        account_type: c.account_type.clone(),
        status: ev
            .data
            .status
            .map_or_else(|| "charged".to_string(), Cow::into_owned),
        amount: c.amount.clone(),
        cost: ev.data.cost.map(Cow::into_owned),
        currency: c.currency.clone(),
        customer_id: None,
        team_id: None,
        transaction_id: ev.data.transaction_id.map(Cow::into_owned),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_of_bytes_reads_what_entry_of_reads() {
        let payloads = [
            r#"{"id":"chg_1","time":"2026-11-20T09:14:03+11:00","data":{"user":"maya","status":"charged","cost":"1.20","transaction_id":"tx-1","extra":{}}}"#,
            r#"{"id":"chg_2","time":"2026-11-20T09:14:03.250Z","data":{"user":"say \"hi\" \\ \u00e9\n","status":"refunded","transaction_id":null,"device":"x"}}"#,
            r#"{"time":"2026-04-05T02:30:00+10:00","data":{"user":"","amount":null}}"#,
        ];
        for p in payloads {
            let c = NewCharge {
                id: "chg_x".into(),
                payload: p.as_bytes().to_vec(),
                job_type: "print".into(),
                account_type: "shared".into(),
                account: "Acme".into(),
                amount: Some("1.20".into()),
                currency: "AUD".into(),
                file: "/f".into(),
                offset: 0,
                line: 1,
                run: 0,
            };
            let event: Value = serde_json::from_slice(p.as_bytes()).unwrap();
            assert_eq!(
                entry_of_bytes(&c, "pc").unwrap(),
                entry_of(&c, &event, "pc").unwrap(),
                "{p}"
            );
        }
        let mut c = NewCharge {
            id: "chg_x".into(),
            payload: br#"{"time":"2026"}"#.to_vec(),
            job_type: "print".into(),
            account_type: "shared".into(),
            account: "Acme".into(),
            amount: None,
            currency: "AUD".into(),
            file: "/f".into(),
            offset: 0,
            line: 1,
            run: 0,
        };
        assert!(entry_of_bytes(&c, "pc").is_err());
        c.payload = br#"{"time":"2026","data":{}}"#.to_vec();
        assert!(entry_of_bytes(&c, "pc").is_err());
    }
}
