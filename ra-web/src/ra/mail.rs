//! Notices to citizens by SMTP (RFC 5321) through the configured relay (`[ra] smtp`,
//! `ECERT_SMTP`). Plain SMTP to a relay the operator runs next to the service; the relay
//! forwards with TLS. Messages carry references and codes, never personal data.

use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Sends mail through one relay.
#[derive(Debug, Clone)]
pub struct Mailer {
    relay: String,
    from: String,
}

impl Mailer {
    /// A mailer for `host:port`, sending as `from`.
    pub fn new(relay: &str, from: &str) -> Self {
        Mailer {
            relay: relay.to_string(),
            from: from.to_string(),
        }
    }

    /// Sends one plain-text message.
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> anyhow::Result<()> {
        let (host, port) = self
            .relay
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| anyhow::anyhow!("ra.smtp must be host:port, got {:?}", self.relay))?;
        let message = Message::builder()
            .from(self.from.parse()?)
            .to(to.parse()?)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_string())?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(std::time::Duration::from_secs(10)))
            .build();
        transport.send(message).await?;
        Ok(())
    }
}
