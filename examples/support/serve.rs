//! How the servers that run until stopped (`server`, `reference_server`) serve: axum until
//! Ctrl-C, finishing the requests in flight. Included like `args.rs`, with
//! `#[path = "../support/serve.rs"] mod serve;`.

/// Serves `app` on `listener` until Ctrl-C.
pub async fn until_ctrl_c(listener: tokio::net::TcpListener, app: axum::Router) {
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("server error");
}
