//! Line-level tests of every profile through `LineParser`, fed by the real
//! line splitter (so CRLF and last-line handling are the production ones).

use std::str::FromStr;
use std::sync::Arc;

use rust_decimal::Decimal;

use super::*;
use crate::charge::{charge_id, AccountType, JobType};
use crate::source::LineSplitter;

const HEADER: &str = "time\ttransaction_id\tuser\taccount\tamount\tbalance\tjob_type\tpages\tcolor_pages\tcopies\tduplex\tdevice\tdocument";
const ROW: &str = "2026-11-20 09:14:03\ttx-000118\talice\tAcme Design\t-1.20\t18.80\tPRINT\t12\t2\t1\tTRUE\tfloor2-mfd\tQ3 board pack.pdf";

fn settings(profile: Profile) -> FormatSettings {
    let mut s = FormatSettings::defaults(profile, "pc-main");
    s.timezone = chrono_tz::Australia::Melbourne;
    s.currency = "AUD".into();
    s
}

fn lines(data: &[u8]) -> Vec<Line> {
    let mut sp = LineSplitter::new(65536, 0, 1);
    let mut out = Vec::new();
    sp.feed(data, &mut out);
    sp.finish(&mut out);
    out
}

fn run_file(s: &FormatSettings, file: &str, data: &[u8]) -> Vec<Parsed> {
    let mut p = LineParser::new(Arc::new(s.clone()), file.to_string());
    lines(data).iter().map(|l| p.parse(l)).collect()
}

fn run(s: &FormatSettings, data: &str) -> Vec<Parsed> {
    run_file(s, "/var/log/papercut/tx.log", data.as_bytes())
}

fn charges(v: &[Parsed]) -> Vec<Charge> {
    v.iter()
        .filter_map(|p| match p {
            Parsed::Charge(c) => Some((**c).clone()),
            _ => None,
        })
        .collect()
}

fn errors(v: &[Parsed]) -> Vec<String> {
    v.iter()
        .filter_map(|p| match p {
            Parsed::Error(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// The only charge of a file; panics (in the test) otherwise.
fn one(s: &FormatSettings, data: &str) -> Charge {
    let out = run(s, data);
    let c = charges(&out);
    assert_eq!(c.len(), 1, "{out:?}");
    assert!(errors(&out).is_empty(), "{out:?}");
    c.into_iter().next().unwrap()
}

/// The only error of a file.
fn err(s: &FormatSettings, data: &str) -> String {
    let out = run(s, data);
    let e = errors(&out);
    assert_eq!(e.len(), 1, "{out:?}");
    e.into_iter().next().unwrap()
}

fn tx(row: &str) -> String {
    format!("{HEADER}\n{row}\n")
}

fn dec(s: &str) -> Option<Decimal> {
    Some(Decimal::from_str(s).unwrap())
}

// ---------------------------------------------------------------- transaction-file

#[test]
fn contract_example() {
    let s = settings(Profile::TransactionFile);
    let out = run(&s, &tx(ROW));
    assert_eq!(out[0], Parsed::Skip);
    let c = one(&s, &tx(ROW));
    assert_eq!(c.time.to_rfc3339(), "2026-11-20T09:14:03+11:00");
    assert_eq!(c.user, "alice");
    assert_eq!(c.account, "Acme Design");
    assert_eq!(c.account_type, AccountType::Shared);
    assert_eq!(c.amount, dec("1.20"));
    assert_eq!(c.amount.unwrap().to_string(), "1.20");
    assert_eq!(c.balance_after, dec("18.80"));
    assert_eq!(c.currency, "AUD");
    assert_eq!(c.job_type, JobType::Print);
    assert_eq!(c.job_type_raw, None);
    assert_eq!(
        (c.pages, c.color_pages, c.copies),
        (Some(12), Some(2), Some(1))
    );
    assert_eq!(c.duplex, Some(true));
    assert_eq!(c.grayscale, None);
    assert_eq!(c.device.as_deref(), Some("floor2-mfd"));
    assert_eq!(c.document.as_deref(), Some("Q3 board pack.pdf"));
    assert_eq!(c.transaction_id.as_deref(), Some("tx-000118"));
    assert_eq!(c.id, charge_id("pc-main", Some("tx-000118"), b"", 0));
    assert_eq!(c.origin.file, "/var/log/papercut/tx.log");
    assert_eq!(c.origin.line, 2);
    assert_eq!(c.origin.offset, HEADER.len() as u64 + 1);
    assert!(c.extra.is_empty());
    let json: serde_json::Value = serde_json::from_slice(&c.to_event_json("pc-main")).unwrap();
    assert_eq!(json["time"], "2026-11-20T09:14:03+11:00");
    assert_eq!(json["subject"], "Acme Design");
    assert_eq!(json["data"]["amount"], "1.20");
    assert_eq!(json["data"]["balance_after"], "18.80");
}

#[test]
fn bom_is_skipped_and_not_part_of_the_id() {
    let s = settings(Profile::TransactionFile);
    let with = run_file(&s, "a", format!("\u{FEFF}{}", tx(ROW)).as_bytes());
    assert_eq!(charges(&with).len(), 1, "{with:?}");
    // Without a header, the BOM sits before the first record.
    let mut nh = settings(Profile::TransactionFile);
    nh.header = false;
    let row = ROW.replace("tx-000118", "");
    let a = charges(&run_file(&nh, "a", format!("\u{FEFF}{row}\n").as_bytes()));
    let b = charges(&run_file(&nh, "b", format!("{row}\n").as_bytes()));
    assert_eq!(a[0].id, b[0].id);
    assert_eq!(a[0].time, b[0].time);
    assert_eq!(a[0].id, charge_id("pc-main", None, row.as_bytes(), 0));
    // A BOM at the start of a later line (files concatenated with `cat`)
    // is ignored by the field splitter too; the line's content, and so its
    // id, still holds it.
    let out = charges(&run(&nh, &format!("{row}\n\u{FEFF}{row}\n")));
    assert_eq!(out[0].time, out[1].time);
    assert_ne!(out[0].id, out[1].id);
}

#[test]
fn crlf_lines_carry_no_cr() {
    let s = settings(Profile::TransactionFile);
    let data = format!("{HEADER}\r\n{ROW}\r\n{ROW}\r\n").replace("tx-000118", "");
    let out = run(&s, &data);
    let c = charges(&out);
    assert_eq!(c.len(), 2, "{out:?}");
    assert_eq!(c[0].document.as_deref(), Some("Q3 board pack.pdf"));
    assert_eq!(
        c[1].origin.offset,
        (HEADER.len() + 2 + ROW.len() - 9 + 2) as u64
    );
    // Same content as an LF file: same ids.
    let lf = charges(&run(&s, &data.replace("\r\n", "\n")));
    assert_eq!(c[0].id, lf[0].id);
    assert_eq!(c[1].id, lf[1].id);
}

#[test]
fn windows_1252_and_invalid_utf8() {
    let mut data = tx(&ROW.replace("Q3 board pack.pdf", "R~sum~.pdf")).into_bytes();
    // R\xE9sum\xE9.pdf as Windows-1252 writes it.
    for b in data.iter_mut() {
        if *b == b'~' {
            *b = 0xE9;
        }
    }
    let mut s = settings(Profile::TransactionFile);
    s.encoding = "windows-1252".parse().unwrap();
    let c = charges(&run_file(&s, "f", &data));
    assert_eq!(c[0].document.as_deref(), Some("Résumé.pdf"));
    // Read as UTF-8, the same bytes are an error naming the byte.
    let s = settings(Profile::TransactionFile);
    let out = run_file(&s, "f", &data);
    let e = errors(&out);
    assert_eq!(e.len(), 1, "{out:?}");
    let pos = ROW.find("Q3").unwrap() + 2;
    assert!(
        e[0].contains(&format!("invalid UTF-8 at byte {pos} ")) && e[0].contains("0xE9"),
        "{}",
        e[0]
    );
    assert!(e[0].contains("windows-1252"), "{}", e[0]);
}

#[test]
fn quoted_fields_with_delimiters_and_doubled_quotes() {
    let s = settings(Profile::TransactionFile);
    let row = ROW.replace("Q3 board pack.pdf", "\"Plan\tA, \"\"final\"\".pdf\"");
    let c = one(&s, &tx(&row));
    assert_eq!(c.document.as_deref(), Some("Plan\tA, \"final\".pdf"));
    // Comma-separated (detected from the header), amount quoted for its comma.
    let csv = "time,user,amount,document\n\
               2026-11-20 09:14:03,bob,\"-1,234.50\",\"a, b.pdf\"\n";
    let c = one(&s, csv);
    assert_eq!(c.amount, dec("1234.50"));
    assert_eq!(c.document.as_deref(), Some("a, b.pdf"));
    // An unterminated quote is an error for that line alone.
    let bad = ROW.replace("Q3 board pack.pdf", "\"Q3 board");
    let out = run(&s, &format!("{HEADER}\n{bad}\n{ROW}\n"));
    let e = errors(&out);
    assert!(
        e[0].contains("field 13") && e[0].contains("cannot span lines"),
        "{e:?}"
    );
    assert_eq!(charges(&out).len(), 1);
}

#[test]
fn shuffled_columns_aliases_and_extra() {
    let s = settings(Profile::TransactionFile);
    let data = "Usage Cost\tTransacted By\tNotes\tTransaction Date\tPrinter Name\tTotal Colour Pages\tAccount Charged\tTransaction Type\tJob UID\tGray_Scale\tClient Machine\tPaper Size Name\tServer Name\tComments\tBalance After\tTotal Pages\tBlank\n\
                -0.60\tMaya\tlate job\t2026-11-18T17:02:11\tlevel1-colour\t3\tmaya\tcopy\tJ-77\tN\tmac-22\tA4\tpc-main\tok\t4.40\t3\t\n";
    let c = one(&s, data);
    assert_eq!(c.amount, dec("0.60"));
    assert_eq!(c.user, "Maya");
    assert_eq!(c.account, "maya");
    assert_eq!(c.account_type, AccountType::Personal);
    assert_eq!(c.time.to_rfc3339(), "2026-11-18T17:02:11+11:00");
    assert_eq!(c.device.as_deref(), Some("level1-colour"));
    assert_eq!(c.color_pages, Some(3));
    assert_eq!(c.pages, Some(3));
    assert_eq!(c.job_type, JobType::Copy);
    assert_eq!(c.transaction_id.as_deref(), Some("J-77"));
    assert_eq!(c.grayscale, Some(false));
    assert_eq!(c.client.as_deref(), Some("mac-22"));
    assert_eq!(c.paper_size.as_deref(), Some("A4"));
    assert_eq!(c.server.as_deref(), Some("pc-main"));
    assert_eq!(c.comment.as_deref(), Some("ok"));
    assert_eq!(c.balance_after, dec("4.40"));
    // Unknown columns kept by their header as written; empty ones left out.
    assert_eq!(c.extra.len(), 1);
    assert_eq!(c.extra["Notes"], "late job");
}

#[test]
fn more_aliases() {
    let s = settings(Profile::TransactionFile);
    let data = "Timestamp\tID\tUser Name\tShared Account\tCharge\tType\tColour Pages\tGreyscale\tDevice Name\tDocument Name\n\
                20261120T091403\t9\tzoe\tStudio Nine\t-2.00\tFAX\t0\tGRAYSCALE\tfax-1\tcover.pdf\n";
    let c = one(&s, data);
    assert_eq!(c.time.to_rfc3339(), "2026-11-20T09:14:03+11:00");
    assert_eq!(c.transaction_id.as_deref(), Some("9"));
    assert_eq!(
        (c.user.as_str(), c.account.as_str()),
        ("zoe", "Studio Nine")
    );
    assert_eq!(c.account_type, AccountType::Shared);
    assert_eq!(c.job_type, JobType::Fax);
    assert_eq!(c.grayscale, Some(true));
    assert_eq!(c.color_pages, Some(0));
    assert_eq!(c.device.as_deref(), Some("fax-1"));
    assert_eq!(c.document.as_deref(), Some("cover.pdf"));
    let data = "Usage Date\tTxn ID\tUsername\tAccount Name\tTransaction Amount\tJob Type\n\
                2026-11-20 08:00:00\tT1\tzoe\t\t-0.10\tScan\n";
    let c = one(&s, data);
    assert_eq!(c.account, "zoe");
    assert_eq!(c.account_type, AccountType::Personal);
    assert_eq!(c.job_type, JobType::Scan);
    assert_eq!(c.amount, dec("0.10"));
    let data = "Date\tUser\tCost\n2026-11-20 08:00:00\tzoe\t-0.10\n";
    assert_eq!(one(&s, data).time.to_rfc3339(), "2026-11-20T08:00:00+11:00");
    // `date` and `time` in two columns.
    let data = "Date\tTime\tUser\tCost\n2026-11-20\t8:00:00 PM\tzoe\t-0.10\n";
    assert_eq!(one(&s, data).time.to_rfc3339(), "2026-11-20T20:00:00+11:00");
    // A full time in the time column is fine when the dates agree.
    let data = "Date\tTime\tUser\tCost\n2026-11-20\t2026-11-20 20:00:00\tzoe\t-0.10\n";
    assert_eq!(one(&s, data).time.to_rfc3339(), "2026-11-20T20:00:00+11:00");
    let data = "Date\tTime\tUser\tCost\n2026-11-21\t2026-11-20 20:00:00\tzoe\t-0.10\n";
    assert!(err(&s, data)
        .starts_with("column \"Time\" (2): \"2026-11-20 20:00:00\" is not a time of day"));
}

#[test]
fn column_overrides_by_name_and_position() {
    let mut s = settings(Profile::TransactionFile);
    s.columns
        .insert("amount".into(), ColumnRef::Name("Betrag".into()));
    s.columns.insert("user".into(), ColumnRef::Position(3));
    s.columns
        .insert("time".into(), ColumnRef::Name("wann".into()));
    let data = "Wann\tBetrag\tWer\tCost\n2026-11-20 10:00:00\t-3.00\tkai\t9.99\n";
    let c = one(&s, data);
    assert_eq!(c.amount, dec("3.00"));
    assert_eq!(c.user, "kai");
    assert_eq!(c.extra["Cost"], "9.99");
    // A name that is not in the header: every line says so.
    s.columns
        .insert("device".into(), ColumnRef::Name("Drucker".into()));
    let out = run(&s, &format!("{data}{}", data.lines().nth(1).unwrap()));
    let e = errors(&out);
    assert_eq!(e.len(), 3, "{out:?}");
    assert!(
        e.iter().all(|e| e.contains("columns.device = \"Drucker\"")),
        "{e:?}"
    );
}

#[test]
fn no_header_uses_the_contract_order_or_positions() {
    let mut s = settings(Profile::TransactionFile);
    s.header = false;
    let c = one(&s, &format!("{ROW}\textra one\n"));
    assert_eq!(c.amount, dec("1.20"));
    assert_eq!(c.document.as_deref(), Some("Q3 board pack.pdf"));
    assert_eq!(c.extra["field14"], "extra one");
    // Too few fields for the order: an error, not a shifted record.
    let short = ROW.rsplit_once('\t').unwrap().0;
    let e = err(&s, &format!("{short}\n"));
    assert!(
        e.contains("12 fields") && e.contains("\"document\" (13)"),
        "{e}"
    );
    // Positions from the config replace the example order.
    s.columns.insert("time".into(), ColumnRef::Position(2));
    s.columns.insert("user".into(), ColumnRef::Position(1));
    s.columns.insert("amount".into(), ColumnRef::Position(3));
    let c = one(&s, "lee,2026-11-20 10:00:00,-0.50,x\n");
    assert_eq!((c.user.as_str(), c.amount), ("lee", dec("0.50")));
    assert_eq!(c.extra["field4"], "x");
    assert_eq!(c.transaction_id, None);
    // Without a time position the layout is unusable, and says why.
    s.columns.remove("time");
    let e = err(&s, "lee,2026-11-20 10:00:00,-0.50\n");
    assert!(e.contains("no position for \"time\""), "{e}");
    // A name needs a header.
    s.columns
        .insert("time".into(), ColumnRef::Name("Time".into()));
    let e = err(&s, "lee,2026-11-20 10:00:00,-0.50\n");
    assert!(
        e.contains("columns.time = \"Time\"") && e.contains("header = false"),
        "{e}"
    );
}

#[test]
fn amount_forms_and_sign_conventions() {
    let s = settings(Profile::TransactionFile);
    let billed = |written: &str, s: &FormatSettings| {
        let data = format!("time\tuser\tamount\n2026-11-20 09:00:00\tal\t{written}\n");
        one(s, &data).amount.unwrap().to_string()
    };
    // Debits are written negative and billed positive; a refund the other way.
    assert_eq!(billed("-1.20", &s), "1.20");
    assert_eq!(billed("1.20", &s), "-1.20");
    assert_eq!(billed("+1.20", &s), "-1.20");
    assert_eq!(billed("-$1.20", &s), "1.20");
    assert_eq!(billed("$-1.20", &s), "1.20");
    assert_eq!(billed("$1.20", &s), "-1.20");
    assert_eq!(billed("(1.20)", &s), "1.20");
    assert_eq!(billed("-1,234.50", &s), "1234.50");
    assert_eq!(billed("-1.20 Credits", &s), "1.20");
    assert_eq!(billed("AUD -1.20", &s), "1.20");
    assert_eq!(billed("-1.20 AUD", &s), "1.20");
    assert_eq!(billed("0.00", &s), "0.00");
    let mut pos = s.clone();
    pos.amount_sign = AmountSign::ChargePositive;
    assert_eq!(billed("1.20", &pos), "1.20");
    assert_eq!(billed("-1.20", &pos), "-1.20");
    let mut comma = s.clone();
    comma.decimal_comma = true;
    assert_eq!(billed("-1,20", &comma), "1.20");
    assert_eq!(billed("-1.234,50", &comma), "1234.50");
    // Balance is kept as written.
    let data = "time\tuser\tamount\tbalance\n2026-11-20 09:00:00\tal\t-1.00\t-3.50\n";
    assert_eq!(one(&s, data).balance_after, dec("-3.50"));
}

#[test]
fn bad_amounts_name_the_column() {
    let s = settings(Profile::TransactionFile);
    let e = err(&s, &tx(&ROW.replace("-1.20", "abc")));
    assert_eq!(e, "column \"amount\" (5): \"abc\" is not an amount");
    let e = err(&s, &tx(&ROW.replace("-1.20", "")));
    assert!(e.starts_with("column \"amount\" (5): empty"), "{e}");
    let e = err(&s, &tx(&ROW.replace("-1.20", "-1.20 USD")));
    assert!(
        e.contains("column \"amount\" (5)") && e.contains("USD"),
        "{e}"
    );
    let e = err(&s, &tx(&ROW.replace("18.80", "lots")));
    assert!(e.starts_with("column \"balance\" (6): \"lots\""), "{e}");
    let data = "Time\tUser\tCost\n2026-11-20 09:00:00\tal\t1,20\n";
    assert_eq!(
        err(&s, data),
        "column \"Cost\" (3): \"1,20\" is not an amount"
    );
}

#[test]
fn job_types() {
    let s = settings(Profile::TransactionFile);
    let jt = |raw: &str| {
        let c = one(&s, &tx(&ROW.replace("PRINT", raw)));
        (c.job_type, c.job_type_raw)
    };
    assert_eq!(jt("print"), (JobType::Print, None));
    assert_eq!(jt("Copy"), (JobType::Copy, None));
    assert_eq!(jt("SCAN"), (JobType::Scan, None));
    assert_eq!(jt("fax"), (JobType::Fax, None));
    assert_eq!(
        jt("ADJUSTMENT"),
        (JobType::Other, Some("ADJUSTMENT".into()))
    );
    assert_eq!(jt(""), (JobType::Other, None));
    // No job type column in a transaction file: `other`, not a guess.
    let c = one(&s, "time\tuser\tamount\n2026-11-20 09:00:00\tal\t-1.00\n");
    assert_eq!((c.job_type, c.job_type_raw), (JobType::Other, None));
}

#[test]
fn booleans_and_counts_in_rows() {
    let s = settings(Profile::TransactionFile);
    let hdr = "time\tuser\tamount\tduplex\tgrayscale\tpages\n";
    let c = one(
        &s,
        &format!("{hdr}2026-11-20 09:00:00\tal\t-1\tNOT DUPLEX\tgrayscale\t7\n"),
    );
    assert_eq!(
        (c.duplex, c.grayscale, c.pages),
        (Some(false), Some(true), Some(7))
    );
    let c = one(&s, &format!("{hdr}2026-11-20 09:00:00\tal\t-1\tyes\t0\t\n"));
    assert_eq!(
        (c.duplex, c.grayscale, c.pages),
        (Some(true), Some(false), None)
    );
    let e = err(
        &s,
        &format!("{hdr}2026-11-20 09:00:00\tal\t-1\tsometimes\tN\t1\n"),
    );
    assert_eq!(
        e,
        "column \"duplex\" (4): \"sometimes\" is not a yes/no value"
    );
    let e = err(&s, &format!("{hdr}2026-11-20 09:00:00\tal\t-1\tY\tN\t-1\n"));
    assert_eq!(e, "column \"pages\" (6): \"-1\" is not a whole number");
}

#[test]
fn account_type_column_and_derivation() {
    let s = settings(Profile::TransactionFile);
    let hdr = "time\tuser\taccount\taccount_type\tamount\n";
    let at = |acct: &str, ty: &str| {
        let c = one(
            &s,
            &format!("{hdr}2026-11-20 09:00:00\tMaya\t{acct}\t{ty}\t-1\n"),
        );
        (c.account, c.account_type)
    };
    assert_eq!(at("Acme", "SHARED"), ("Acme".into(), AccountType::Shared));
    assert_eq!(
        at("Acme", "Personal"),
        ("Acme".into(), AccountType::Personal)
    );
    assert_eq!(at("maya", ""), ("maya".into(), AccountType::Personal));
    assert_eq!(at("Acme", ""), ("Acme".into(), AccountType::Shared));
    assert_eq!(at("", ""), ("Maya".into(), AccountType::Personal));
    let e = err(
        &s,
        &format!("{hdr}2026-11-20 09:00:00\tMaya\tAcme\tteam\t-1\n"),
    );
    assert!(
        e.starts_with("column \"account_type\" (4): \"team\""),
        "{e}"
    );
    let e = err(
        &s,
        &format!("{hdr}2026-11-20 09:00:00\tMaya\t\tshared\t-1\n"),
    );
    assert!(e.contains("no account is named"), "{e}");
}

#[test]
fn missing_user_bad_time_wrong_field_count_too_long() {
    let s = settings(Profile::TransactionFile);
    let e = err(&s, &tx(&ROW.replace("alice", " ")));
    assert_eq!(e, "column \"user\" (3): empty, a charge needs a user");
    let e = err(
        &s,
        &tx(&ROW.replace("2026-11-20 09:14:03", "2026-11-31 09:14:03")),
    );
    assert!(
        e.starts_with("column \"time\" (1): \"2026-11-31 09:14:03\" is not a time"),
        "{e}"
    );
    let e = err(&s, &tx("2026-11-20 09:14:03\ttx-1\talice"));
    assert_eq!(e, "3 fields, header has 13");
    let e = err(&s, &tx(&format!("{ROW}\tmore")));
    assert_eq!(e, "14 fields, header has 13 (and field 14 is not empty)");
    let e = err(&s, &tx(&format!("{ROW}\t\t\tmore")));
    assert_eq!(e, "16 fields, header has 13 (and field 16 is not empty)");
    // An over-long line (as the splitter marks it) is an error; reading goes on.
    let mut p = LineParser::new(Arc::new(s), "f".into());
    let mut ls = lines(tx(ROW).as_bytes());
    ls[1].too_long = Some(70000);
    assert_eq!(p.parse(&ls[0]), Parsed::Skip);
    assert_eq!(
        p.parse(&ls[1]),
        Parsed::Error(format!(
            "line is 70000 bytes, over the limit of {} bytes",
            ROW.len()
        ))
    );
}

#[test]
fn header_without_required_columns() {
    let s = settings(Profile::TransactionFile);
    let out = run(&s, "time\tuser\tnotes\n2026-11-20 09:00:00\tal\tx\n");
    let e = errors(&out);
    assert_eq!(e.len(), 2, "{out:?}");
    assert!(
        e[0].contains("line 1) has no \"amount\" column (looked for: amount, cost, usage cost"),
        "{}",
        e[0]
    );
    assert!(
        e[1].starts_with("no usable column layout: the header"),
        "{}",
        e[1]
    );
    // A file whose first line is a record: a hint.
    let e = errors(&run(&s, &format!("{ROW}\n{ROW}\n")));
    assert!(
        e[0].contains("looks like a record") && e[0].contains("header = false"),
        "{}",
        e[0]
    );
}

#[test]
fn blank_lines_and_repeated_header_are_skipped() {
    let s = settings(Profile::TransactionFile);
    let out = run(&s, &format!("\n{HEADER}\n\n  \n{ROW}\n{HEADER}\n"));
    assert_eq!(charges(&out).len(), 1);
    assert!(errors(&out).is_empty(), "{out:?}");
    assert_eq!(out.len(), 6);
}

#[test]
fn dst_through_the_parser() {
    let s = settings(Profile::TransactionFile);
    let t = |when: &str, s: &FormatSettings| {
        let data = format!("time\tuser\tamount\n{when}\tal\t-1.00\n");
        one(s, &data).time.to_rfc3339()
    };
    assert_eq!(t("2026-10-04 02:30:00", &s), "2026-10-04T03:30:00+11:00");
    assert_eq!(t("2026-04-05 02:30:00", &s), "2026-04-05T02:30:00+11:00");
    assert_eq!(
        t("2026-04-05T02:30:00+10:00", &s),
        "2026-04-05T02:30:00+10:00"
    );
    let mut ny = s.clone();
    ny.timezone = chrono_tz::America::New_York;
    assert_eq!(t("2026-03-08 02:30:00", &ny), "2026-03-08T03:30:00-04:00");
    assert_eq!(t("2026-11-01 01:30:00", &ny), "2026-11-01T01:30:00-04:00");
    assert_eq!(t("2026-11-01 02:30:00", &ny), "2026-11-01T02:30:00-05:00");
}

#[test]
fn charge_ids() {
    let s = settings(Profile::TransactionFile);
    let hdr = "time\tuser\taccount\tamount\n";
    let row = "2026-11-20 09:00:00\tal\tAcme\t-1.00";
    let data = format!("{hdr}{row}\n{row}\n2026-11-20 09:00:01\tal\tAcme\t-1.00\n{row}\n");
    let a = charges(&run_file(&s, "/a/tx.log", data.as_bytes()));
    let b = charges(&run_file(&s, "/archive/tx.log.1", data.as_bytes()));
    assert_eq!(a.len(), 4);
    // A copy of the file gives the same ids; its origin differs.
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.id, y.id);
        assert_ne!(x.origin.file, y.origin.file);
    }
    // Identical lines get different ids: their ordinals differ.
    assert_ne!(a[0].id, a[1].id);
    assert_ne!(a[1].id, a[3].id);
    assert_eq!(a[0].id, charge_id("pc-main", None, row.as_bytes(), 0));
    assert_eq!(a[1].id, charge_id("pc-main", None, row.as_bytes(), 1));
    assert_eq!(a[3].id, charge_id("pc-main", None, row.as_bytes(), 2));
    // With a transaction id, the id is that of the transaction id alone.
    let c = one(&s, &tx(ROW));
    assert_eq!(
        c.id,
        charge_id("pc-main", Some("tx-000118"), b"anything", 9)
    );
    // Another source name, other ids.
    let mut other = s.clone();
    other.source_name = "pc-branch".into();
    let o = charges(&run_file(&other, "/a/tx.log", data.as_bytes()));
    assert_ne!(o[0].id, a[0].id);
}

#[test]
fn ordinals_are_not_taken_by_bad_lines_or_transaction_ids() {
    let s = settings(Profile::TransactionFile);
    let hdr = "time\ttransaction_id\tuser\tamount\n";
    let row = "2026-11-20 09:00:00\t\tal\t-1.00";
    let data = format!("{hdr}2026-11-20 09:00:00\tT1\tal\t-1.00\n{row}\n");
    let c = charges(&run(&s, &data));
    assert_eq!(c[1].id, charge_id("pc-main", None, row.as_bytes(), 0));
}

// ---------------------------------------------------------------- print-log

const PL: &str = "2026-11-20\t9:14:03 PM\tpc-main\tlevel1-mfd\tmaya.chen@harbourworks.com.au\tAcme Design\tmaya-laptop\tBrief.pdf\t4\t1";

#[test]
fn print_log_documented_fields() {
    let s = settings(Profile::PrintLog);
    let c = one(&s, &format!("{PL}\n"));
    assert_eq!(c.time.to_rfc3339(), "2026-11-20T21:14:03+11:00");
    assert_eq!(c.server.as_deref(), Some("pc-main"));
    assert_eq!(c.device.as_deref(), Some("level1-mfd"));
    assert_eq!(c.user, "maya.chen@harbourworks.com.au");
    assert_eq!(
        (c.account.as_str(), c.account_type),
        ("Acme Design", AccountType::Shared)
    );
    assert_eq!(c.client.as_deref(), Some("maya-laptop"));
    assert_eq!(c.document.as_deref(), Some("Brief.pdf"));
    assert_eq!((c.pages, c.color_pages), (Some(4), Some(1)));
    assert_eq!(c.job_type, JobType::Print);
    // No cost field: no amount, not zero.
    assert_eq!(c.amount, None);
    assert_eq!(c.transaction_id, None);
}

#[test]
fn print_log_optional_trailing_fields() {
    let s = settings(Profile::PrintLog);
    let c = one(
        &s,
        &format!("{PL}\t2\t0.80\tDUPLEX\tNOT GRAYSCALE\tA4\tmore\n"),
    );
    assert_eq!(c.copies, Some(2));
    assert_eq!(c.amount, dec("0.80"));
    assert_eq!((c.duplex, c.grayscale), (Some(true), Some(false)));
    assert_eq!(c.extra["field15"], "A4");
    assert_eq!(c.extra["field16"], "more");
    let c = one(&s, &format!("{PL}\t3\n"));
    assert_eq!((c.copies, c.amount), (Some(3), None));
    // Personal: the account is the user's name.
    let c = one(
        &s,
        &format!(
            "{}\n",
            PL.replace("Acme Design", "MAYA.chen@harbourworks.com.au")
        ),
    );
    assert_eq!(c.account_type, AccountType::Personal);
    let e = err(&s, &format!("{PL}\t2\tfree\n"));
    assert_eq!(e, "column \"cost\" (12): \"free\" is not an amount");
}

#[test]
fn print_log_twelve_hour_edges_and_errors() {
    let s = settings(Profile::PrintLog);
    let t = |tod: &str| {
        one(&s, &format!("{}\n", PL.replace("9:14:03 PM", tod)))
            .time
            .to_rfc3339()
    };
    assert_eq!(t("12:00:00 AM"), "2026-11-20T00:00:00+11:00");
    assert_eq!(t("12:59:59 AM"), "2026-11-20T00:59:59+11:00");
    assert_eq!(t("12:00:00 PM"), "2026-11-20T12:00:00+11:00");
    assert_eq!(t("1:05:09 am"), "2026-11-20T01:05:09+11:00");
    assert_eq!(t("11:05:09 pm"), "2026-11-20T23:05:09+11:00");
    let e = err(
        &s,
        &format!("{}\n", PL.replace("9:14:03 PM", "13:14:03 PM")),
    );
    assert!(
        e.starts_with("column \"time\" (2): \"13:14:03 PM\" is not a time of day"),
        "{e}"
    );
    let e = err(&s, &format!("{}\n", PL.replace("2026-11-20", "20/11/2026")));
    assert!(
        e.starts_with("column \"date\" (1): \"20/11/2026\" is not a date"),
        "{e}"
    );
    let short = PL.rsplit_once('\t').unwrap().0;
    let e = err(&s, &format!("{short}\n"));
    assert!(
        e.contains("9 fields") && e.contains("\"total colour pages\" (10)"),
        "{e}"
    );
    // DST in a split date and time.
    let e = one(
        &s,
        &format!(
            "{}\n",
            PL.replace("2026-11-20\t9:14:03 PM", "2026-10-04\t2:30:00 AM")
        ),
    );
    assert_eq!(e.time.to_rfc3339(), "2026-10-04T03:30:00+11:00");
}

#[test]
fn print_log_position_override() {
    let mut s = settings(Profile::PrintLog);
    s.columns.insert("amount".into(), ColumnRef::Position(13));
    let c = one(&s, &format!("{PL}\t2\tx\t0.40\n"));
    assert_eq!(c.amount, dec("0.40"));
    assert_eq!(c.extra["field12"], "x");
}

// ---------------------------------------------------------------- print-logger-csv

const PLC_HEADER: &str = "Time,User,Pages,Copies,Printer,Document Name,Client,Paper Size,Language,Height,Width,Duplex,Grayscale,Size";
const PLC_ROW: &str = "2026-11-20 09:14:03,zoe@harbourworks.com.au,3,2,\\\\pc-main\\level2-mono,\"Invoice, final.docx\",zoe-pc,A4,PCL6,297.0mm,210.0mm,DUPLEX,GRAYSCALE,120kb";

#[test]
fn print_logger_banner_header_rows() {
    let s = settings(Profile::PrintLoggerCsv);
    let data = format!(
        "PaperCut Print Logger : http://www.papercut.com/\r\n{PLC_HEADER}\r\n{PLC_ROW}\r\n"
    );
    let out = run(&s, &data);
    assert_eq!(out[0], Parsed::Skip);
    assert_eq!(out[1], Parsed::Skip);
    let c = one(&s, &data);
    assert_eq!(c.time.to_rfc3339(), "2026-11-20T09:14:03+11:00");
    assert_eq!(c.user, "zoe@harbourworks.com.au");
    assert_eq!(
        (c.account.as_str(), c.account_type),
        ("zoe@harbourworks.com.au", AccountType::Personal)
    );
    assert_eq!(c.amount, None);
    assert_eq!((c.pages, c.copies), (Some(3), Some(2)));
    assert_eq!(c.device.as_deref(), Some("\\\\pc-main\\level2-mono"));
    assert_eq!(c.document.as_deref(), Some("Invoice, final.docx"));
    assert_eq!(c.client.as_deref(), Some("zoe-pc"));
    assert_eq!(c.paper_size.as_deref(), Some("A4"));
    assert_eq!((c.duplex, c.grayscale), (Some(true), Some(true)));
    assert_eq!(c.job_type, JobType::Print);
    assert_eq!(c.extra["Language"], "PCL6");
    assert_eq!(c.extra["Height"], "297.0mm");
    assert_eq!(c.extra["Width"], "210.0mm");
    assert_eq!(c.extra["Size"], "120kb");
    assert_eq!(c.color_pages, None);
}

#[test]
fn print_logger_without_banner_or_with_any_banner() {
    let s = settings(Profile::PrintLoggerCsv);
    let c = one(&s, &format!("{PLC_HEADER}\n{PLC_ROW}\n"));
    assert_eq!(c.origin.line, 2);
    let c = one(
        &s,
        &format!("Print Logger v1.7 export\n{PLC_HEADER}\n{PLC_ROW}\n"),
    );
    assert_eq!(c.origin.line, 3);
    // A record is never taken for a banner or a header: a file with neither
    // is read by position from its first line.
    let out = run(&s, &format!("{PLC_ROW}\n{PLC_ROW}\n{PLC_ROW}\n"));
    assert_eq!(charges(&out).len(), 3, "{out:?}");
    assert!(errors(&out).is_empty(), "{out:?}");
    // Only one unknown banner: then a short line is an error, not skipped.
    let out = run(&s, &format!("title\nanother\n{PLC_ROW}\n"));
    assert_eq!(out[0], Parsed::Skip);
    assert_eq!(errors(&out).len(), 2, "{out:?}");
    // Without a header, the documented columns by position.
    let mut nh = s.clone();
    nh.header = false;
    let c = one(
        &nh,
        &format!("PaperCut Print Logger : http://www.papercut.com/\n{PLC_ROW}\n"),
    );
    assert_eq!(c.document.as_deref(), Some("Invoice, final.docx"));
    assert_eq!(c.extra["Size"], "120kb");
    // Bad values name the column by its header.
    let e = err(
        &s,
        &format!("{PLC_HEADER}\n{}\n", PLC_ROW.replace("DUPLEX,", "SIMPLEX,")),
    );
    assert_eq!(
        e,
        "column \"Duplex\" (12): \"SIMPLEX\" is not a yes/no value"
    );
    let e = err(
        &s,
        &format!("{PLC_HEADER}\n{}\n", PLC_ROW.replace(",3,2,", ",three,2,")),
    );
    assert_eq!(e, "column \"Pages\" (3): \"three\" is not a whole number");
}

// ---------------------------------------------------------------- job-details

const JD: &str = "time=20261120T091403,user=maya,server=pc-main,printer=level1-mfd,cost=1.50,total-pages=6,total-color-pages=2,copies=1,\"document-name=Plan, \"\"v2\"\".pdf\",duplex=TRUE,grayscale=FALSE,paper-size-name=A4,document-size-kb=220,client-machine=maya-mac,client-ip=10.0.0.7,shared-account=Acme Design,comment=pitch,invoice=INV-7";

#[test]
fn job_details_pairs() {
    let s = settings(Profile::JobDetails);
    let c = one(&s, &format!("{JD}\n"));
    assert_eq!(c.time.to_rfc3339(), "2026-11-20T09:14:03+11:00");
    assert_eq!(c.user, "maya");
    assert_eq!(c.server.as_deref(), Some("pc-main"));
    assert_eq!(c.device.as_deref(), Some("level1-mfd"));
    assert_eq!(c.amount, dec("1.50"));
    assert_eq!(
        (c.pages, c.color_pages, c.copies),
        (Some(6), Some(2), Some(1))
    );
    assert_eq!(c.document.as_deref(), Some("Plan, \"v2\".pdf"));
    assert_eq!((c.duplex, c.grayscale), (Some(true), Some(false)));
    assert_eq!(c.paper_size.as_deref(), Some("A4"));
    assert_eq!(c.client.as_deref(), Some("maya-mac"));
    assert_eq!(
        (c.account.as_str(), c.account_type),
        ("Acme Design", AccountType::Shared)
    );
    assert_eq!(c.comment.as_deref(), Some("pitch"));
    assert_eq!(c.job_type, JobType::Print);
    assert_eq!(c.extra["document-size-kb"], "220");
    assert_eq!(c.extra["client-ip"], "10.0.0.7");
    assert_eq!(c.extra["invoice"], "INV-7");
    // Personal without a shared account; job-type when given; no cost → None.
    let c = one(
        &s,
        "user=kai,server=s,printer=p,time=20261120T100000,job-type=copy\n",
    );
    assert_eq!(
        (c.account.as_str(), c.account_type),
        ("kai", AccountType::Personal)
    );
    assert_eq!((c.job_type, c.amount), (JobType::Copy, None));
    // A shared account that happens to be named like the user is still shared.
    let c = one(
        &s,
        "user=kai,server=s,printer=p,time=20261120T100000,shared-account=kai\n",
    );
    assert_eq!(c.account_type, AccountType::Shared);
}

#[test]
fn job_details_errors() {
    let s = settings(Profile::JobDetails);
    let e = err(&s, "user=kai,server=s,time=20261120T100000\n");
    assert!(e.starts_with("missing \"printer\""), "{e}");
    let e = err(&s, "user=kai,printer=p,time=20261120T100000\n");
    assert!(e.starts_with("missing \"server\""), "{e}");
    let e = err(&s, "server=s,printer=p,time=20261120T100000\n");
    assert!(e.starts_with("missing \"user\""), "{e}");
    let e = err(&s, "user=,server=s,printer=p,time=20261120T100000\n");
    assert_eq!(e, "field \"user\": empty");
    let e = err(
        &s,
        "user=kai,server=s,printer=p,time=20261120T100000,cost=abc\n",
    );
    assert_eq!(e, "field \"cost\": \"abc\" is not an amount");
    let e = err(
        &s,
        "user=kai,server=s,printer=p,time=20261120T100000,cost=\n",
    );
    assert!(e.starts_with("field \"cost\": empty"), "{e}");
    let e = err(&s, "user=kai,server=s,printer=p,time=20261131T100000\n");
    assert!(
        e.starts_with("field \"time\": \"20261131T100000\" is not a time"),
        "{e}"
    );
    let e = err(
        &s,
        "user=kai,server=s,printer=p,time=20261120T100000,oops\n",
    );
    assert_eq!(e, "pair 5 \"oops\" is not name=value");
    let e = err(
        &s,
        "user=kai,user=bo,server=s,printer=p,time=20261120T100000\n",
    );
    assert_eq!(e, "\"user\" is given twice");
}

#[test]
fn job_details_names_from_config_and_precedence() {
    let mut s = settings(Profile::JobDetails);
    s.columns
        .insert("amount".into(), ColumnRef::Name("price".into()));
    // `cost` comes first but the config names `price`: `cost` is kept aside.
    let c = one(
        &s,
        "cost=9,user=kai,server=s,printer=p,time=20261120T100000,price=0.70\n",
    );
    assert_eq!(c.amount, dec("0.70"));
    assert_eq!(c.extra["cost"], "9");
    // A field's own name beats an alias whatever the order.
    let s = settings(Profile::JobDetails);
    let c = one(
        &s,
        "shared-account=Acme,account=Studio Nine,user=kai,server=s,printer=p,time=20261120T100000\n",
    );
    assert_eq!(c.account, "Studio Nine");
    assert_eq!(c.account_type, AccountType::Shared);
    assert_eq!(c.extra["shared-account"], "Acme");
    let mut s = settings(Profile::JobDetails);
    s.columns.insert("pages".into(), ColumnRef::Position(3));
    let e = err(&s, "user=kai,server=s,printer=p,time=20261120T100000\n");
    assert!(e.contains("job details have names, not positions"), "{e}");
}

#[test]
fn an_unreadable_header_makes_every_record_an_error() {
    let s = settings(Profile::TransactionFile);
    let mut data = b"time\tuser\tamount\tr\xE9f\n".to_vec();
    data.extend_from_slice(b"2026-11-20 09:00:00\tal\t-1.00\tx\n");
    let out = run_file(&s, "f", &data);
    let e = errors(&out);
    assert_eq!(e.len(), 2, "{out:?}");
    assert!(e[0].starts_with("invalid UTF-8 at byte 19 "), "{}", e[0]);
    assert!(
        e[1].starts_with("no usable column layout: the header (line 1) could not be read"),
        "{}",
        e[1]
    );
}

// ---------------------------------------------------------------- robustness

#[test]
fn arbitrary_bytes_never_panic() {
    // A deterministic xorshift: lines of random bytes drawn from an alphabet
    // rich in delimiters, quotes, digits and non-ASCII.
    let alphabet: &[u8] = b"\t,\"=$-+.()0123456789 AaPpMmTZ:\xC3\xA9\xEF\xBB\xBF\r";
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for profile in [
        Profile::TransactionFile,
        Profile::PrintLog,
        Profile::PrintLoggerCsv,
        Profile::JobDetails,
    ] {
        for header in [true, false] {
            let mut s = settings(profile);
            s.header = header;
            let mut p = LineParser::new(Arc::new(s), "f".into());
            for n in 0..2000u64 {
                let len = (next() % 120) as usize;
                let bytes: Vec<u8> = (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect();
                let line = Line {
                    offset: n * 200,
                    number: n + 1,
                    bytes,
                    too_long: None,
                };
                let _ = p.parse(&line);
            }
        }
    }
}

/// The corpus of real shapes, mutated (bytes flipped, cut, duplicated) and
/// read in every profile and several encodings: no panic.
#[test]
fn mutated_real_shapes_never_panic() {
    let seeds: Vec<Vec<u8>> = vec![
        format!("PaperCut Print Logger - http://www.papercut.biz/\r\n{PLC_HEADER}\r\n{PLC_REAL_ROW}\r\n").into_bytes(),
        "Hora,Usuario,P\u{e1}ginas,Copias,Impresora,Nombre Documento,Cliente,Formato Papel,Idioma,Altura,Anchura,Frente/reverso,Escala de grises,Formato\n".into(),
        "user=bob,server=papercut,\"printer=Library, rear\"\n".into(),
        "user=bob,server=papercut,printer=\"\"John Smith\"\" Library\n".into(),
        "\"user=a, b\",server=s,printer=p,shared-account=\"\"x\"\" y,document-name=\"q\n".into(),
        "Usage Date\tUser\tCharged To Account\tUsage Cost\tRefunded\tstatus\n2026-11-20 09:00:05\tu\tA\t1.20\tY\tdenied\t\t\n".into(),
        [&[0xFF, 0xFE][..], &"a,\u{4E0A}\r\n".encode_utf16().flat_map(|u| u.to_le_bytes()).collect::<Vec<u8>>()].concat(),
        encoding_rs::WINDOWS_1251.encode("2026-11-20 09:00:00,\u{418}\u{432}\u{430}\u{43d}\n").0.into_owned(),
    ];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let encodings = [
        "utf-8",
        "auto",
        "windows-1251",
        "shift_jis",
        "utf-16le",
        "big5",
    ];
    for profile in [
        Profile::TransactionFile,
        Profile::PrintLog,
        Profile::PrintLoggerCsv,
        Profile::JobDetails,
    ] {
        for enc in encodings {
            let mut s = settings(profile);
            s.encoding = enc.parse().unwrap();
            for seed in &seeds {
                for _ in 0..20 {
                    let mut b = seed.clone();
                    for _ in 0..(next() % 4) {
                        if b.is_empty() {
                            break;
                        }
                        let i = (next() % b.len() as u64) as usize;
                        match next() % 3 {
                            0 => b[i] = (next() & 0xFF) as u8,
                            1 => b.truncate(i),
                            _ => {
                                let tail = b[i..].to_vec();
                                b.extend_from_slice(&tail);
                            }
                        }
                    }
                    let mut p = LineParser::new(Arc::new(s.clone()), "f".into());
                    let mut sp = LineSplitter::new(300, 0, 1);
                    let mut out = Vec::new();
                    for chunk in b.chunks(1 + (next() % 7) as usize) {
                        sp.feed(chunk, &mut out);
                    }
                    sp.finish(&mut out);
                    for l in &out {
                        let _ = p.parse(l);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- field shapes (issue: real files)

/// A Print Logger row as the real exports write it: a trailing comma (15
/// fields under 14 columns), empty Height/Width, a size like `19kb`.
const PLC_REAL_ROW: &str = "2026-11-20 17:50:10,noah.kim,4,3,HW-MFD01,\"Seating plan - Notepad\",NOAH-PC,LETTER,PCL6,,,NOT DUPLEX,GRAYSCALE,19kb,";

#[test]
fn print_logger_real_shape_every_banner_variant() {
    let s = settings(Profile::PrintLoggerCsv);
    for banner in [
        "PaperCut Print Logger - http://www.papercut.com/",
        "PaperCut Print Logger : http://www.papercut.com/",
        "PaperCut Print Logger - http://www.papercut.biz/",
    ] {
        let data = format!("{banner}\r\n{PLC_HEADER}\r\n{PLC_REAL_ROW}\r\n{PLC_REAL_ROW}\r\n");
        let out = run(&s, &data);
        assert_eq!(&out[..2], &[Parsed::Skip, Parsed::Skip], "{banner}");
        let c = charges(&out);
        assert_eq!(c.len(), 2, "{banner}: {out:?}");
        assert!(errors(&out).is_empty(), "{out:?}");
        assert_eq!((c[0].pages, c[0].copies), (Some(4), Some(3)));
        assert_eq!(c[0].document.as_deref(), Some("Seating plan - Notepad"));
        assert_eq!(c[0].extra["Size"], "19kb");
        assert!(!c[0].extra.contains_key("Height"), "{:?}", c[0].extra);
        assert_eq!((c[0].duplex, c[0].grayscale), (Some(false), Some(true)));
        assert_eq!(c[0].status, crate::charge::Status::Charged);
        assert_ne!(c[0].id, c[1].id);
    }
    // A row with more non-empty fields than the header is still an error.
    let e = err(&s, &format!("{PLC_HEADER}\n{PLC_REAL_ROW}oops\n"));
    assert_eq!(e, "15 fields, header has 14 (and field 15 is not empty)");
}

#[test]
fn print_logger_header_in_any_language_is_read_by_position() {
    let s = settings(Profile::PrintLoggerCsv);
    let es = "Hora,Usuario,Páginas,Copias,Impresora,Nombre Documento,Cliente,Formato Papel,Idioma,Altura,Anchura,Frente/reverso,Escala de grises,Formato";
    let data = format!("PaperCut Print Logger - http://www.papercut.com/\n{es}\n{PLC_REAL_ROW}\n");
    let c = one(&s, &data);
    assert_eq!(c.user, "noah.kim");
    assert_eq!((c.pages, c.copies), (Some(4), Some(3)));
    assert_eq!(c.device.as_deref(), Some("HW-MFD01"));
    assert_eq!(c.paper_size.as_deref(), Some("LETTER"));
    // Extra keys are the documented names, whatever the header says.
    assert_eq!(c.extra["Language"], "PCL6");
    assert_eq!(c.extra["Size"], "19kb");
    // Errors name the column as the file's header does.
    let e = err(
        &s,
        &format!("{es}\n{}\n", PLC_REAL_ROW.replace(",4,3,", ",cuatro,3,")),
    );
    assert_eq!(
        e,
        "column \"Páginas\" (3): \"cuatro\" is not a whole number"
    );
    // Without any header or banner: positions from the first line.
    let c = one(&s, &format!("{PLC_REAL_ROW}\n"));
    assert_eq!(c.origin.line, 1);
}

#[test]
fn trailing_empty_fields_in_every_header_profile() {
    let s = settings(Profile::TransactionFile);
    let c = one(&s, &tx(&format!("{ROW}\t\t")));
    assert_eq!(c.amount, dec("1.20"));
    let mut csv = settings(Profile::TransactionFile);
    csv.delimiter = Some(b',');
    let c = one(&csv, "time,user,amount\n2026-11-20 09:14:03,alice,-1.20,\n");
    assert_eq!(c.amount, dec("1.20"));
    let e = err(
        &csv,
        "time,user,amount\n2026-11-20 09:14:03,alice,-1.20,,x\n",
    );
    assert!(e.starts_with("5 fields, header has 3"), "{e}");
    // A header profile given with header = true (print log with a header).
    let mut pl = settings(Profile::PrintLog);
    pl.header = true;
    let c = one(
        &pl,
        "date\ttime\tuser\tprinter\n2026-11-20\t9:14:03 AM\tkai\tp1\t\t\n",
    );
    assert_eq!(c.user, "kai");
}

#[test]
fn job_details_as_the_manual_prints_them() {
    let s = settings(Profile::JobDetails);
    // The minimum: user, server, printer; no time.
    let before = chrono::Utc::now().timestamp();
    let c = one(&s, "user=maya,server=pc-harbour,printer=Front Desk\n");
    let after = chrono::Utc::now().timestamp();
    assert!(c.time_read);
    assert!((before..=after).contains(&c.time.timestamp()), "{}", c.time);
    assert_eq!(c.time.offset().local_minus_utc() % 1800, 0);
    assert_eq!(c.device.as_deref(), Some("Front Desk"));
    let json: serde_json::Value = serde_json::from_slice(&c.to_event_json("pc")).unwrap();
    assert_eq!(json["data"]["time_source"], "read");
    // The id does not depend on the time of reading: read again later, same id.
    let again = one(&s, "user=maya,server=pc-harbour,printer=Front Desk\n");
    assert_eq!(c.id, again.id);
    // A pair holding a comma is quoted whole.
    let c = one(
        &s,
        "user=maya,server=pc-harbour,\"printer=Library, rear\"\n",
    );
    assert_eq!(c.device.as_deref(), Some("Library, rear"));
    // Doubled quotes in an unquoted pair are one quote.
    let c = one(
        &s,
        "user=maya,server=pc-harbour,printer=\"\"Front Desk\"\" Colour\n",
    );
    assert_eq!(c.device.as_deref(), Some("\"Front Desk\" Colour"));
    // The same for who pays: user and shared-account.
    let c = one(
        &s,
        "\"user=o'brien, sam\",server=s,printer=p,\"shared-account=Acme, \"\"Design\"\"\"\n",
    );
    assert_eq!(c.user, "o'brien, sam");
    assert_eq!(c.account, "Acme, \"Design\"");
    assert_eq!(c.account_type, AccountType::Shared);
    let c = one(
        &s,
        "user=\"\"sam\"\",server=s,printer=p,shared-account=\"\"Acme\"\" Labs\n",
    );
    assert_eq!(
        (c.user.as_str(), c.account.as_str()),
        ("\"sam\"", "\"Acme\" Labs")
    );
    // A value quoted on its own.
    let c = one(
        &s,
        "user=sam,server=s,printer=p,document-name=\"a, b.pdf\"\n",
    );
    assert_eq!(c.document.as_deref(), Some("a, b.pdf"));
    // With a time, it is the job's own.
    let c = one(&s, "user=sam,server=s,printer=p,time=20261120T091403\n");
    assert!(!c.time_read);
    let json: serde_json::Value = serde_json::from_slice(&c.to_event_json("pc")).unwrap();
    assert!(json["data"].get("time_source").is_none());
    let e = err(&s, "user=sam,server=s,\"printer=open\n");
    assert!(e.contains("does not close"), "{e}");
}

#[test]
fn papercut_column_names_and_job_states() {
    use crate::charge::Status;
    let s = settings(Profile::TransactionFile);
    let h = "Usage Date\tUser\tCharged To Account\tUsage Cost\tTotal Printed Pages\tJob Comment\ttotal_sheets\tRefunded\tCancelled\tPrinted\tUsage Allowed";
    let row =
        |flags: &str| format!("{h}\n2026-11-20 09:14:03\tkai\tAcme\t-1.50\t6\tpitch\t3\t{flags}\n");
    let c = one(&s, &row("N\tN\tY\tY"));
    assert_eq!(c.account, "Acme");
    assert_eq!(c.pages, Some(6));
    assert_eq!(c.comment.as_deref(), Some("pitch"));
    assert_eq!(c.extra["total_sheets"], "3");
    assert_eq!(
        (c.status, c.amount, c.cost),
        (Status::Charged, dec("1.50"), dec("1.50"))
    );
    for (flags, status) in [
        ("Y\tN\tY\tY", Status::Refunded),
        ("N\tY\tY\tY", Status::Cancelled),
        ("N\tN\tN\tY", Status::Cancelled),
        ("N\tN\tY\tN", Status::Denied),
    ] {
        let c = one(&s, &row(flags));
        assert_eq!(c.status, status, "{flags}");
        assert_eq!(c.amount, Some(Decimal::ZERO), "{flags}");
        assert_eq!(c.cost, dec("1.50"), "{flags}");
        let json: serde_json::Value = serde_json::from_slice(&c.to_event_json("pc")).unwrap();
        assert_eq!(json["data"]["amount"], "0");
        assert_eq!(json["data"]["cost"], "1.50");
        assert_eq!(json["data"]["status"], status.as_str());
    }
    // A status column in words; the snake_case names of the database.
    let h2 = "time\tuser\tcharged_to_account\tamount\ttxn_comment\tstatus";
    for (word, status) in [
        ("printed", Status::Charged),
        ("REFUNDED", Status::Refunded),
        ("canceled", Status::Cancelled),
        ("usage_denied", Status::Denied),
    ] {
        let c = one(
            &s,
            &format!("{h2}\n2026-11-20 09:14:03\tkai\tAcme\t-0.20\tx\t{word}\n"),
        );
        assert_eq!((c.status, c.account.as_str()), (status, "Acme"), "{word}");
        assert_eq!(c.comment.as_deref(), Some("x"));
    }
    let e = err(
        &s,
        &format!("{h2}\n2026-11-20 09:14:03\tkai\tAcme\t-0.20\tx\tmaybe\n"),
    );
    assert!(
        e.starts_with("column \"status\" (6): \"maybe\" is not a job status"),
        "{e}"
    );
    // Every message says its status; a plain charge has its cost too.
    let c = one(&s, &tx(ROW));
    let json: serde_json::Value = serde_json::from_slice(&c.to_event_json("pc")).unwrap();
    assert_eq!(json["data"]["status"], "charged");
    assert_eq!(json["data"]["cost"], "1.20");
    // Job details: a denied job.
    let j = settings(Profile::JobDetails);
    let c = one(
        &j,
        "user=k,server=s,printer=p,cost=0.40,denied-reason=over quota\n",
    );
    assert_eq!(
        (c.status, c.amount, c.cost),
        (Status::Denied, Some(Decimal::ZERO), dec("0.40"))
    );
}

#[test]
fn encodings_through_the_parser() {
    // A Cyrillic Print Logger file in Windows-1251, read with `auto`.
    let text = format!(
        "PaperCut Print Logger - http://www.papercut.biz/\r\n{PLC_HEADER}\r\n\
         2026-11-20 09:00:00,Иванов,3,1,Бухгалтерия,Отчёт за ноябрь.docx,PC-01,A4,PCL6,,,NOT DUPLEX,GRAYSCALE,19kb,\r\n\
         2026-11-20 09:05:00,Петрова,1,1,Бухгалтерия,Счёт-фактура №17.pdf,PC-02,A4,PCL6,,,NOT DUPLEX,GRAYSCALE,20kb,\r\n"
    );
    let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode(&text);
    let mut s = settings(Profile::PrintLoggerCsv);
    s.encoding = TextEncoding::Auto;
    let mut p = LineParser::new(Arc::new(s.clone()), "f".into());
    let out: Vec<Parsed> = lines(&bytes).iter().map(|l| p.parse(l)).collect();
    assert_eq!(p.encoding(), Some(encoding_rs::WINDOWS_1251));
    let c = charges(&out);
    assert_eq!(c.len(), 2, "{out:?}");
    assert_eq!(c[0].user, "Иванов");
    assert_eq!(c[1].document.as_deref(), Some("Счёт-фактура №17.pdf"));
    // Configured, the same.
    s.encoding = "windows-1251".parse().unwrap();
    let c = charges(&run_file(&s, "f", &bytes));
    assert_eq!(c[0].user, "Иванов");
    // Read as UTF-8 (the default), every record is an error, not garbled.
    let u = settings(Profile::PrintLoggerCsv);
    let out = run_file(&u, "f", &bytes);
    assert_eq!((charges(&out).len(), errors(&out).len()), (0, 2), "{out:?}");
    assert!(errors(&out)[0].contains("\"auto\""), "{out:?}");
    // Shift_JIS and GBK job details.
    let mut j = settings(Profile::JobDetails);
    j.encoding = "shift_jis".parse().unwrap();
    let (b, _, _) = encoding_rs::SHIFT_JIS.encode("user=山田,server=s,printer=受付\n");
    let c = charges(&run_file(&j, "f", &b));
    assert_eq!(
        (c[0].user.as_str(), c[0].device.as_deref()),
        ("山田", Some("受付"))
    );
    j.encoding = "gbk".parse().unwrap();
    let (b, _, _) = encoding_rs::GBK.encode("user=张伟,server=s,printer=前台\n");
    let c = charges(&run_file(&j, "f", &b));
    assert_eq!(c[0].user, "张伟");
}
