//! A billing consumer: reads chargetail's charges from a RabbitMQ queue and
//! records each one in PostgreSQL exactly once, whatever is redelivered.
//!
//!     cargo run --example pg_consumer -- \
//!         --amqp amqp://guest:guest@127.0.0.1:5672/%2f --queue billing.charges \
//!         --pg "host=127.0.0.1 user=postgres dbname=billing"
//!
//! The rules it shows (docs/consumer.md): dedupe on the charge id with a
//! primary key and `INSERT … ON CONFLICT (id) DO NOTHING`; acknowledge a
//! message only after its transaction has committed; amounts as exact
//! decimals (`numeric`), never floats; a message that is not a charge is
//! rejected to the queue's dead-letter exchange, never acked away.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;
use tokio_postgres::NoTls;

#[derive(Parser)]
#[command(about = "Consume chargetail charges from RabbitMQ into PostgreSQL, each id once")]
struct Args {
    /// The broker.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp: String,
    /// The queue bound to chargetail's exchange.
    #[arg(long)]
    queue: String,
    /// libpq-style connection string of the billing database.
    #[arg(long, default_value = "host=127.0.0.1 user=postgres dbname=billing")]
    pg: String,
    /// Unacknowledged messages the broker may hand us at once.
    #[arg(long, default_value_t = 100)]
    prefetch: u16,
    /// Stop after this many seconds without a message (default: run forever).
    #[arg(long)]
    exit_when_idle: Option<u64>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS charges (
    id          text PRIMARY KEY,
    account     text NOT NULL,
    amount      numeric,
    currency    char(3) NOT NULL,
    charged_at  timestamptz NOT NULL,
    body        jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
)";

const INSERT: &str = "
INSERT INTO charges (id, account, amount, currency, charged_at, body)
VALUES ($1, $2, CAST($3::text AS numeric), $4, CAST($5::text AS timestamptz), CAST($6::text AS jsonb))
ON CONFLICT (id) DO NOTHING";

/// What a charge message gives the table.
struct Row {
    id: String,
    account: String,
    amount: Option<String>,
    currency: String,
    time: String,
}

fn row(body: &[u8]) -> Result<Row> {
    let v: Value = serde_json::from_slice(body).context("not JSON")?;
    let text = |ptr: &str| -> Result<String> {
        v.pointer(ptr)
            .and_then(Value::as_str)
            .map(str::to_string)
            .with_context(|| format!("no {ptr}"))
    };
    if v["type"] != "papercut.charge" {
        bail!("type {} is not papercut.charge", v["type"]);
    }
    let id = text("/id")?;
    if !id.starts_with("chg_") {
        bail!("id {id:?} is not a charge id");
    }
    Ok(Row {
        id,
        account: text("/data/account")?,
        // A decimal string, or null where the file has no cost.
        amount: v["data"]["amount"].as_str().map(str::to_string),
        currency: text("/data/currency")?,
        time: text("/time")?,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();

    let (mut db, connection) = tokio_postgres::connect(&args.pg, NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    let db_task = tokio::spawn(connection);
    db.batch_execute(SCHEMA)
        .await
        .context("creating the table")?;
    let insert = db.prepare(INSERT).await.context("preparing the insert")?;

    let conn = Connection::connect(&args.amqp, ConnectionProperties::default())
        .await
        .context("connecting to RabbitMQ")?;
    let chan = conn.create_channel().await?;
    chan.basic_qos(args.prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = chan
        .basic_consume(
            args.queue.as_str().into(),
            "pg_consumer".into(),
            BasicConsumeOptions::default(), // manual acknowledgements
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consuming from {}", args.queue))?;

    let (mut inserted, mut duplicates, mut rejected) = (0u64, 0u64, 0u64);
    loop {
        let next = match args.exit_when_idle {
            Some(secs) => {
                match tokio::time::timeout(Duration::from_secs(secs), consumer.next()).await {
                    Ok(n) => n,
                    Err(_) => break, // idle
                }
            }
            None => consumer.next().await,
        };
        let delivery = match next {
            Some(d) => d.context("consuming")?,
            None => bail!("the broker closed the consumer"),
        };
        let row = match row(&delivery.data) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("pg_consumer: rejecting a message that is not a charge: {e:#}");
                delivery
                    .nack(BasicNackOptions {
                        requeue: false,
                        ..Default::default()
                    })
                    .await?;
                rejected += 1;
                continue;
            }
        };
        let body = std::str::from_utf8(&delivery.data).context("body is not UTF-8")?;
        // One transaction per message: its effect and its id together.
        let tx = db.transaction().await?;
        let n = tx
            .execute(
                &insert,
                &[
                    &row.id,
                    &row.account,
                    &row.amount,
                    &row.currency,
                    &row.time,
                    &body,
                ],
            )
            .await
            .with_context(|| format!("inserting {}", row.id))?;
        tx.commit().await.context("commit")?;
        // Only now: a crash before this line redelivers, and the insert
        // above then does nothing.
        delivery.ack(BasicAckOptions::default()).await?;
        if n == 1 {
            inserted += 1;
        } else {
            duplicates += 1;
        }
    }
    println!("inserted {inserted}, duplicates {duplicates}, rejected {rejected}");
    let _ = conn.close(200, "idle".into()).await;
    drop(db);
    let _ = db_task.await;
    Ok(())
}
