//! The PostgreSQL store over TLS, and its refusal of a database that may
//! lose commits. TLS: `sslmode=require` with the server's
//! certificate verified against `sslrootcert` (or the Web PKI's roots).
//!
//! Run when `WP_TEST_POSTGRES_URL` and `WP_TEST_POSTGRES_TLS_ROOT` (the CA
//! certificate, PEM, of a server that takes TLS as `localhost`) are set:
//! `.ci/run` sets the second when the database has `ssl = on` with a
//! certificate for `localhost` (Debian's default). Without them the tests
//! pass with a note.

use wechat_push::store::{Inbox, PostgresStore, StoreError};

/// `WP_TEST_POSTGRES_URL` as `localhost` (the name the certificate has),
/// in a schema of `name`'s own, with `extra` parameters.
async fn tls_url(name: &str, extra: &str) -> Option<(String, tokio_postgres::Client)> {
    let (Ok(base), Ok(_)) = (
        std::env::var("WP_TEST_POSTGRES_URL"),
        std::env::var("WP_TEST_POSTGRES_TLS_ROOT"),
    ) else {
        eprintln!(
            "{name}: WP_TEST_POSTGRES_URL and WP_TEST_POSTGRES_TLS_ROOT are not both set, not run"
        );
        return None;
    };
    let (client, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("WP_TEST_POSTGRES_URL={base} does not answer: {e}"));
    tokio::spawn(connection);
    let schema = format!("tls_{}_{name}", std::process::id());
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .await
        .unwrap();
    let local = base.replace("@127.0.0.1:", "@localhost:");
    assert_ne!(
        local, base,
        "the test needs WP_TEST_POSTGRES_URL at 127.0.0.1"
    );
    let separator = if local.contains('?') { '&' } else { '?' };
    let url = format!(
        "{local}{separator}options=-csearch_path%3D{schema}&application_name={schema}{extra}"
    );
    Some((url, client))
}

#[tokio::test]
async fn over_tls_every_connection_is_encrypted_and_verified() {
    let root = std::env::var("WP_TEST_POSTGRES_TLS_ROOT").unwrap_or_default();
    let Some((url, admin)) =
        tls_url("verified", &format!("&sslmode=require&sslrootcert={root}")).await
    else {
        return;
    };
    let store = PostgresStore::open(&url).await.unwrap();
    store.ping().await.unwrap();
    let name = format!("tls_{}_verified", std::process::id());
    let row = admin
        .query_one(
            "SELECT count(*), bool_and(s.ssl) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = $1",
            &[&name],
        )
        .await
        .unwrap();
    let (connections, all_tls): (i64, Option<bool>) = (row.get(0), row.get(1));
    assert!(connections >= 1, "the store's connections are not seen");
    assert_eq!(all_tls, Some(true), "a connection of the store is not TLS");
}

#[tokio::test]
async fn a_certificate_no_root_vouches_for_is_refused() {
    // sslmode=require without sslrootcert: the Web PKI's roots, which do
    // not vouch for this server's own certificate.
    let Some((url, _admin)) = tls_url("unverified", "&sslmode=require").await else {
        return;
    };
    let e = PostgresStore::open(&url).await.unwrap_err();
    let chain = wechat_push::display_chain(&e);
    assert!(matches!(e, StoreError::Database(_)), "{chain}");
    assert!(chain.to_lowercase().contains("certificate"), "{chain}");
}

#[tokio::test]
async fn an_sslrootcert_without_tls_is_a_configuration_mistake() {
    let e = PostgresStore::open("postgres://u@127.0.0.1:1/db?sslrootcert=/etc/ssl/ca.pem")
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Config(_)), "{e}");
    assert!(e.to_string().contains("sslmode=require"), "{e}");
    // A file that is not there is named.
    let e = PostgresStore::open(
        "postgres://u@127.0.0.1:1/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
    )
    .await
    .unwrap_err();
    assert!(matches!(e, StoreError::Config(_)), "{e}");
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
}

/// The README promises that a database which may lose a commit is refused:
/// a session with `synchronous_commit` off stands in for such a server.
#[tokio::test]
async fn a_database_that_may_lose_commits_is_refused() {
    let Ok(base) = std::env::var("WP_TEST_POSTGRES_URL") else {
        eprintln!(
            "a_database_that_may_lose_commits_is_refused: WP_TEST_POSTGRES_URL is not set, not run"
        );
        return;
    };
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}options=-csynchronous_commit%3Doff");
    let e = PostgresStore::open(&url).await.unwrap_err();
    assert!(
        matches!(&e, StoreError::NotDurable { setting } if setting == "synchronous_commit"),
        "{e}"
    );
    assert!(e.to_string().contains("synchronous_commit = off"), "{e}");
}
