//! AMQP 0-9-1 (RabbitMQ) sink.
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    pub url: String,
    pub exchange: String,
    #[serde(default = "default_routing_key")]
    pub routing_key: String,
}

fn default_routing_key() -> String {
    "charge.{job_type}".into()
}
