//! `chargetail reconcile`: totals to the cent against sums computed here
//! from the raw lines, by account, user, customer and day over a period,
//! `--against` a PaperCut export, the exit codes, the sink down, jobs not
//! billed. The rig: tests/billing_support.

mod billing_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};

use billing_support::*;
use rust_decimal::Decimal;

#[test]
fn reconcile_totals_equal_sums_of_the_raw_lines() {
    let raw = raw_lines();
    let (dir, cfg) = setup(FULL_MAPPING, "[sink]\nkind = \"stdout\"", "");
    let (code, events) = replay_all(dir.path(), &cfg, &[]);
    assert_eq!(code, 0);
    assert_eq!(events.len(), raw.len());
    // Every message says who pays.
    for e in &events {
        let account = e["data"]["account"].as_str().unwrap();
        assert_eq!(
            e["data"]["billing"]["customer_id"].as_str(),
            customer_of(account),
            "{e}"
        );
        assert_eq!(e["data"]["billing"]["via"], "mapping");
    }
    let liam = events
        .iter()
        .find(|e| e["data"]["account"] == "liam.ng@harbourworks.com.au")
        .unwrap();
    assert_eq!(liam["data"]["billing"]["team_id"], "team_solo");

    // By account: counts and sums computed here from the raw lines.
    let mut want: BTreeMap<String, (u64, Decimal)> = BTreeMap::new();
    for r in &raw {
        let e = want.entry(r.account.clone()).or_default();
        e.0 += 1;
        e.1 += r.billed;
    }
    let (code, rep) = reconcile(dir.path(), &cfg, &["--by", "account"]);
    assert_eq!(code, 0, "{rep}");
    let groups = rep["groups"].as_array().unwrap();
    assert_eq!(groups.len(), want.len());
    for g in groups {
        let (n, sum) = want[g["key"].as_str().unwrap()];
        assert_eq!(g["read"], n, "{g}");
        assert_eq!(g["delivered"], n, "{g}");
        assert_eq!(g["pending"], 0);
        assert_eq!(g["dead"], 0);
        assert_eq!(g["amount_read"], cents(sum), "{g}");
        assert_eq!(g["amount_delivered"], cents(sum), "{g}");
        assert_eq!(g["currency"], "AUD");
    }
    let total: Decimal = raw.iter().map(|r| r.billed).sum();
    assert_eq!(rep["totals"]["read"], raw.len() as u64);
    assert_eq!(rep["totals"]["amount_read"], cents(total));
    assert_eq!(rep["totals"]["amount_delivered"], cents(total));
    // Refunds are there: the total is below the sum of the debits.
    let debits: Decimal = raw
        .iter()
        .map(|r| r.billed)
        .filter(|a| *a > Decimal::ZERO)
        .sum();
    assert!(total < debits);

    // By day, in the source's zone: the DST day keeps its jobs on both
    // sides of the jump and at both ends of the day.
    let (_, rep) = reconcile(dir.path(), &cfg, &["--by", "day"]);
    let days: BTreeMap<String, (u64, String)> = rep["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["key"].as_str().unwrap().to_string(),
                (
                    g["read"].as_u64().unwrap(),
                    g["amount_read"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();
    assert_eq!(days.len(), 7);
    for (day, (n, amount)) in &days {
        let mine: Vec<&Raw> = raw.iter().filter(|r| &r.day == day).collect();
        assert_eq!(*n, mine.len() as u64, "{day}");
        assert_eq!(*amount, cents(mine.iter().map(|r| r.billed).sum()), "{day}");
    }
    assert!(raw.iter().any(|r| r.time == "2026-10-04 23:59:59"));
    assert!(raw.iter().any(|r| r.time == "2026-10-04 00:10:00"));

    // A period: two days only.
    let (_, rep) = reconcile(
        dir.path(),
        &cfg,
        &["--from", "2026-10-03", "--to", "2026-10-04"],
    );
    let mine: Vec<&Raw> = raw
        .iter()
        .filter(|r| r.day.as_str() >= "2026-10-03" && r.day.as_str() <= "2026-10-04")
        .collect();
    assert_eq!(rep["totals"]["read"], mine.len() as u64);
    assert_eq!(
        rep["totals"]["amount_read"],
        cents(mine.iter().map(|r| r.billed).sum())
    );

    // By user and by customer.
    let (_, rep) = reconcile(dir.path(), &cfg, &["--by", "customer"]);
    let mut by_customer: BTreeMap<&str, Decimal> = BTreeMap::new();
    for r in &raw {
        *by_customer
            .entry(customer_of(&r.account).unwrap())
            .or_default() += r.billed;
    }
    for g in rep["groups"].as_array().unwrap() {
        assert_eq!(
            g["amount_read"],
            cents(by_customer[g["key"].as_str().unwrap()]),
            "{g}"
        );
    }
    let (_, rep) = reconcile(dir.path(), &cfg, &["--by", "user"]);
    let users: BTreeSet<&str> = raw.iter().map(|r| r.user.as_str()).collect();
    assert_eq!(rep["groups"].as_array().unwrap().len(), users.len());

    // The table names the accounts and the totals.
    let (code, table) = cli(
        dir.path(),
        &["reconcile", "--config", cfg.to_str().unwrap()],
    );
    assert_eq!(code, 0);
    assert!(
        table.contains("Acme Design") && table.contains(&cents(total)),
        "{table}"
    );
    // A bad date is a usage error.
    let (code, _) = cli(
        dir.path(),
        &[
            "reconcile",
            "--config",
            cfg.to_str().unwrap(),
            "--from",
            "03/10/2026",
        ],
    );
    assert_eq!(code, 2);

    // Against the PaperCut export: the job it lacks, the one only it has,
    // the refunds (a job log export has no adjustments), totals side by side.
    let export = format!("{FIXTURES}/papercut-export.csv");
    let (code, rep) = reconcile(dir.path(), &cfg, &["--against", &export]);
    assert_eq!(code, 1, "the export does not match");
    let a = &rep["against"];
    let only_export: Vec<&str> = a["only_in_export"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["transaction_id"].as_str().unwrap())
        .collect();
    assert_eq!(only_export, ["tx-099999"]);
    let only_read: BTreeSet<String> = a["only_read"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let id_of = |tx: &str| {
        events
            .iter()
            .find(|e| e["data"]["transaction_id"] == tx)
            .map(|e| e["id"].as_str().unwrap().to_string())
            .unwrap()
    };
    let mut want_only_read: BTreeSet<String> = raw
        .iter()
        .filter(|r| r.billed < Decimal::ZERO)
        .map(|r| id_of(&r.tx))
        .collect();
    want_only_read.insert(id_of("tx-007005"));
    assert_eq!(only_read, want_only_read);
    // The export's total, summed here from its Cost column.
    let text = std::fs::read_to_string(&export).unwrap();
    let export_total: Decimal = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(5).unwrap().parse::<Decimal>().unwrap())
        .sum();
    assert_eq!(a["totals"][0]["export"], cents(export_total));
    assert_eq!(a["totals"][0]["read"], cents(total));
    assert_eq!(a["totals"][0]["delivered"], cents(total));
    assert_eq!(
        a["matched"].as_u64().unwrap(),
        (text.lines().count() - 2) as u64
    );
}

#[test]
fn reconcile_with_the_sink_down_exits_1_and_names_what_is_pending() {
    let raw = raw_lines();
    // Nothing listens on port 1.
    let (dir, cfg) = setup(
        FULL_MAPPING,
        "[sink]\nkind = \"amqp\"\n[sink.amqp]\nurl = \"amqp://guest:guest@127.0.0.1:1/%2f\"\nexchange = \"x\"\ntimeout_ms = 300",
        "",
    );
    let (code, _) = replay_all(dir.path(), &cfg, &["--give-up-after", "2"]);
    assert_ne!(code, 0);
    let (code, rep) = reconcile(dir.path(), &cfg, &[]);
    assert_eq!(code, 1, "{rep}");
    assert_eq!(rep["totals"]["read"], raw.len() as u64);
    assert_eq!(rep["totals"]["pending"], raw.len() as u64);
    assert_eq!(rep["totals"]["delivered"], 0);
    assert_eq!(rep["totals"]["amount_delivered"], "0.00");
    let listed = rep["undelivered"].as_array().unwrap();
    assert_eq!(listed.len(), raw.len().min(100));
    assert!(listed.iter().all(|u| u["state"] == "pending"));
    let (code, table) = cli(
        dir.path(),
        &["reconcile", "--config", cfg.to_str().unwrap()],
    );
    assert_eq!(code, 1);
    assert!(
        table.contains(&format!("not delivered ({})", raw.len()))
            && table.contains(listed[0]["id"].as_str().unwrap()),
        "{table}"
    );
}

/// A job refunded, cancelled or denied (PaperCut's job status) is read and
/// delivered but bills 0: reconcile counts it as not billed and leaves it
/// out of the amounts.
#[test]
fn reconcile_counts_refunded_cancelled_and_denied_jobs_as_not_billed() {
    let (dir, cfg) = setup(FULL_MAPPING, "[sink]\nkind = \"stdout\"", "");
    for f in std::fs::read_dir(dir.path().join("tx")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let liam = "liam.ng@harbourworks.com.au";
    let ava = "ava.patel@harbourworks.com.au";
    std::fs::write(
        dir.path().join("tx/tx-2026-10-08.log"),
        format!(
            "time\ttransaction_id\tuser\taccount\tamount\tstatus\n\
             2026-10-08 09:00:00\ttx-9001\t{liam}\t{liam}\t-1.20\tprinted\n\
             2026-10-08 09:05:00\ttx-9002\t{liam}\t{liam}\t-2.40\trefunded\n\
             2026-10-08 09:10:00\ttx-9003\t{ava}\tKoala Labs\t-3.60\tcancelled\n\
             2026-10-08 09:15:00\ttx-9004\t{ava}\tKoala Labs\t-4.80\tdenied\n"
        ),
    )
    .unwrap();
    let (code, events) = replay_all(dir.path(), &cfg, &[]);
    assert_eq!((code, events.len()), (0, 4));
    let statuses: BTreeSet<&str> = events
        .iter()
        .map(|e| e["data"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        BTreeSet::from(["cancelled", "charged", "denied", "refunded"])
    );
    let (code, rep) = reconcile(dir.path(), &cfg, &["--by", "account"]);
    assert_eq!(code, 0, "{rep}");
    let t = &rep["totals"];
    assert_eq!(
        (t["read"].as_u64(), t["delivered"].as_u64()),
        (Some(4), Some(4))
    );
    assert_eq!(t["not_billed"], 3, "{rep}");
    assert_eq!(t["amount_read"], "1.20", "{rep}");
    assert_eq!(t["amount_delivered"], "1.20", "{rep}");
    let koala = rep["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == "Koala Labs")
        .unwrap();
    assert_eq!(
        (koala["read"].as_u64(), koala["not_billed"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(koala["amount_read"], "0.00", "{koala}");
}
