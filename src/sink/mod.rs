//! Sink stage: hand a charge's message to where it goes.
pub mod amqp;
