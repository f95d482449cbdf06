//! A tonic server with the conditional layer in `Server::builder().layer(..)`.
//!
//! ```sh
//! cargo run --example grpc -- --addr 127.0.0.1:50051
//! ```
//!
//! gRPC is unaffected: unary and streaming calls pass through untouched, trailers
//! (`grpc-status`) intact — gRPC responses are never buffered and calls without conditions
//! are never held. Beyond HTTP, the layer guards writes the same way: an `if-match` metadata
//! entry on the unary `Update` call is checked against the lookup (which reads the item named
//! by the `item-id` metadata entry) before the service runs, and a stale one is answered
//! with gRPC status FAILED_PRECONDITION in a trailers-only response — never an HTTP 412.
//! `Update` then writes only the item `item-id` names (INVALID_ARGUMENT otherwise), as a
//! compare-and-swap on what the layer checked.
//!
//! The service is written by hand over `tonic::server::Grpc` and prost messages, so the
//! example needs no `protoc`; generated code does the same.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use futures_util::Stream;
use tonic::server::{Grpc, NamedService, ServerStreamingService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;
use tower_conditional::{
    lookup_fn, ConditionalLayer, EntityTag, Expectation, LookupRequest, Validators,
};

/// `items.Items/Get` and `Update` answer this; `Watch` streams it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Item {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub value: String,
    /// The strong tag of `value`: send it back as `if-match` metadata to update.
    #[prost(string, tag = "3")]
    pub etag: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetItem {
    #[prost(string, tag = "1")]
    pub id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateItem {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchItem {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(uint32, tag = "2")]
    pub count: u32,
}

pub type Store = Arc<Mutex<HashMap<String, String>>>;

fn item(id: &str, value: &str) -> Item {
    Item {
        id: id.to_owned(),
        value: value.to_owned(),
        etag: EntityTag::from_content(value.as_bytes()).to_string(),
    }
}

#[derive(Clone)]
struct Get(Store);

impl UnaryService<GetItem> for Get {
    type Response = Item;
    type Future = BoxFuture<'static, Result<Response<Item>, Status>>;

    fn call(&mut self, request: Request<GetItem>) -> Self::Future {
        let found = self.0.lock().unwrap().get(&request.get_ref().id).cloned();
        let id = request.into_inner().id;
        Box::pin(async move {
            match found {
                Some(value) => Ok(Response::new(item(&id, &value))),
                None => Err(Status::not_found(format!("no item {id}"))),
            }
        })
    }
}

#[derive(Clone)]
struct Update(Store);

impl UnaryService<UpdateItem> for Update {
    type Response = Item;
    type Future = BoxFuture<'static, Result<Response<Item>, Status>>;

    fn call(&mut self, request: Request<UpdateItem>) -> Self::Future {
        let named = request
            .metadata()
            .get("item-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let expected = request.extensions().get::<Expectation>().cloned();
        let UpdateItem { id, value } = request.into_inner();
        let answer = update(&self.0, named, expected.as_ref(), id, value);
        Box::pin(async move { answer })
    }
}

/// The write the layer let through. It checked the item the `item-id` metadata names, so the
/// message must name that item too; and another writer may have come in between, so the
/// write is a compare-and-swap on what was checked (the `Expectation`).
fn update(
    store: &Store,
    named: Option<String>,
    expected: Option<&Expectation>,
    id: String,
    value: String,
) -> Result<Response<Item>, Status> {
    if (named.is_some() || expected.is_some()) && named.as_deref() != Some(id.as_str()) {
        return Err(Status::invalid_argument(format!(
            "the item-id metadata ({}) must name the item the message updates ({id})",
            named.as_deref().unwrap_or("missing")
        )));
    }
    let mut store = store.lock().unwrap();
    let current = store
        .get(&id)
        .map(|v| EntityTag::from_content(v.as_bytes()));
    if let Some(e) = expected {
        let lost = (e.must_not_exist() && current.is_some())
            || (e.must_exist() && current.is_none())
            || e.etag()
                .is_some_and(|tag| !current.as_ref().is_some_and(|c| tag.strong_eq(c)));
        if lost {
            return Err(Status::failed_precondition(
                "the item changed while this call was checked; nothing was written",
            ));
        }
    }
    store.insert(id.clone(), value.clone());
    Ok(Response::new(item(&id, &value)))
}

#[derive(Clone)]
struct Watch(Store);

type ItemStream = Pin<Box<dyn Stream<Item = Result<Item, Status>> + Send>>;

impl ServerStreamingService<WatchItem> for Watch {
    type Response = Item;
    type ResponseStream = ItemStream;
    type Future = BoxFuture<'static, Result<Response<ItemStream>, Status>>;

    fn call(&mut self, request: Request<WatchItem>) -> Self::Future {
        let WatchItem { id, count } = request.into_inner();
        let store = self.0.clone();
        Box::pin(async move {
            let stream = futures_util::stream::iter(0..count).map(move |n| {
                let value = store.lock().unwrap().get(&id).cloned().unwrap_or_default();
                Ok(item(&id, &format!("{value} #{n}")))
            });
            Ok(Response::new(Box::pin(stream) as ItemStream))
        })
    }
}

use futures_util::StreamExt as _;

#[path = "support/args.rs"]
mod args;

/// The `items.Items` service: routes by path to the three methods.
#[derive(Clone)]
pub struct ItemsServer {
    store: Store,
}

impl NamedService for ItemsServer {
    const NAME: &'static str = "items.Items";
}

impl tower::Service<http::Request<tonic::body::Body>> for ItemsServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let store = self.store.clone();
        Box::pin(async move {
            Ok(match req.uri().path() {
                "/items.Items/Get" => {
                    Grpc::new(ProstCodec::default())
                        .unary(Get(store), req)
                        .await
                }
                "/items.Items/Update" => {
                    Grpc::new(ProstCodec::default())
                        .unary(Update(store), req)
                        .await
                }
                "/items.Items/Watch" => {
                    Grpc::new(ProstCodec::default())
                        .server_streaming(Watch(store), req)
                        .await
                }
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

#[tokio::main]
async fn main() {
    let addr = args::addr_or_exit("grpc", "127.0.0.1:50051");
    let store: Store = Arc::new(Mutex::new(HashMap::from([(
        "42".to_owned(),
        "the answer".to_owned(),
    )])));
    // The lookup: the item named by the `item-id` metadata entry (gRPC paths name methods,
    // not resources).
    let items = store.clone();
    let lookup = lookup_fn(move |req: LookupRequest| {
        let id = req
            .headers()
            .get("item-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let found =
            items.lock().unwrap().get(id).map(|value| {
                Validators::new().with_etag(EntityTag::from_content(value.as_bytes()))
            });
        async move { Ok::<_, Infallible>(found) }
    });
    let listener = args::bind_and_announce(&addr).await;
    tonic::transport::Server::builder()
        .layer(
            ConditionalLayer::new()
                .lookup(lookup)
                .serialize_writes(true),
        )
        .add_service(ItemsServer { store })
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await
        .expect("server");
}
