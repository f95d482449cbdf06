//! A realistic `tower::ServiceBuilder` stack: request tracing, the conditional layer, and
//! response compression — in the order that keeps strong ETags correct.
//!
//! ```sh
//! RUST_LOG=tower_http=debug cargo run --example service_builder -- --addr 127.0.0.1:3003
//! curl -i --compressed http://127.0.0.1:3003/report     # gzip, with its own ETag
//! curl -i http://127.0.0.1:3003/report                  # identity, another ETag
//! ```
//!
//! The conditional layer sits *outside* compression, so it hashes the bytes that go on the
//! wire: a gzip response and an identity response are different representations and get
//! different strong tags (RFC 9110 §8.8.3), and each revalidates to 304 on its own. Inside
//! compression, both encodings would share one strong tag — which a cache could then use
//! to splice bytes of one encoding into the other.

use axum::routing::get;
use axum::Router;
use tower::ServiceBuilder;
use tower_conditional::ConditionalLayer;
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;

async fn report() -> String {
    let mut text = String::from("Quarterly report\n================\n");
    for quarter in 1..=4 {
        text.push_str(&format!(
            "Q{quarter}: revenue grew, costs fell, everyone is happy.\n"
        ));
    }
    text
}

/// The stack, outermost first: trace → conditional → compression → handler.
fn app() -> Router {
    Router::new().route("/report", get(report)).layer(
        ServiceBuilder::new()
            .layer(TraceLayer::new_for_http())
            .layer(ConditionalLayer::new())
            .layer(CompressionLayer::new()),
    )
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "tower_http=debug".into()),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let mut addr = "127.0.0.1:3003".to_owned();
    while let Some(arg) = args.next() {
        if arg == "--addr" {
            addr = args.next().expect("--addr needs a value");
        }
    }
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    println!("listening on http://{}", listener.local_addr().unwrap());
    axum::serve(listener, app()).await.unwrap();
}
