//! Addresses a user gives (`--coordinator`, `Client::connect`) checked
//! before any connection: one that can never work (no port, a port out of
//! range, an empty host, a URL) is an invalid request (the CLI's exit 3,
//! the client's `ClientError::Invalid`, not retryable), not "cannot
//! connect, try again later".

/// One `HOST:PORT`.
pub fn host_port(text: &str) -> Result<String, String> {
    if let Some((scheme, _)) = text.split_once("://") {
        return Err(format!(
            "{text:?} is not HOST:PORT (no {scheme}:// scheme: twopc speaks its own protocol over TCP)"
        ));
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(|| format!("{text:?} is not HOST:PORT (no port)"))?;
    if host.is_empty() || host == "[]" {
        return Err(format!("{text:?} is not HOST:PORT (no host)"));
    }
    if host.contains(',') {
        return Err(format!("{text:?} is not HOST:PORT: one address here, not a list"));
    }
    if !is_host(host) {
        return Err(format!("{text:?} is not HOST:PORT (the host {host:?} is not a name or an IP address)"));
    }
    match port.parse::<u16>() {
        Ok(port) if port != 0 => Ok(text.to_string()),
        _ => Err(format!("{text:?}: the port must be a number from 1 to 65535")),
    }
}

/// Whether `host` can be a host name or an IP address (IPv6 in
/// brackets): no spaces, no other punctuation.
pub fn is_host(host: &str) -> bool {
    let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let name = bracketed.unwrap_or(host);
    let allowed =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') || (bracketed.is_some() && c == ':');
    !name.is_empty() && name.chars().all(allowed)
}

/// `HOST:PORT[,HOST:PORT...]`, each checked.
pub fn host_port_list(text: &str) -> Result<String, String> {
    for one in text.split(',') {
        host_port(one.trim())?;
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_that_can_never_work_are_refused_when_parsed() {
        for good in ["127.0.0.1:7000", "localhost:1", "[::1]:7000", "db.example:65535"] {
            assert_eq!(host_port(good).as_deref(), Ok(good));
        }
        for bad in [
            "http://127.0.0.1:7000",
            "nonsense",
            "127.0.0.1:99999",
            "127.0.0.1:0",
            ":7000",
            "127.0.0.1:",
            "127.0.0.1:x",
            "127.0.0.1:7000,127.0.0.1:7001",
            "a host:7000",
            "::1:7000",
        ] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
        assert!(host_port_list("127.0.0.1:7000, 127.0.0.1:7010").is_ok());
        assert!(host_port_list("127.0.0.1:7000,nonsense").is_err());
    }
}
