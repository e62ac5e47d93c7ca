//! Subscription fan-out benchmark client (run by `benches/fanout.sh`, which
//! starts the release server): N WebSocket subscribers on `stockChanged`,
//! M movements recorded one after another, and the delay from each
//! mutation's response (and from its request) to each subscriber's delivery.
//!
//! Usage: fanout URL TOKEN PRODUCT_ID SUBSCRIBERS MOVEMENTS
//!
//! With `FANOUT_TARGET=postgraphile` the same client measures PostGraphile 4
//! (`@graphile/pg-pubsub`, `--simple-subscriptions`; graphql-transport-ws on
//! `/graphql`): `listen(topic: "movements")`, fed by a trigger on the peer's
//! movements table, and its `createStockMovement` mutation. TOKEN is unused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Barrier, mpsc};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

/// What differs between the servers measured: where they listen, what is
/// subscribed and recorded, and where the movement's id is in each answer.
struct Target {
    ws_path: &'static str,
    subscription: &'static str,
    mutation: &'static str,
    authorized: bool,
    /// The movement's id in an event's `data`.
    event_id: fn(&Value) -> Option<String>,
    /// The movement's id in the mutation's `data`.
    recorded_id: fn(&Value) -> Option<String>,
}

const STOCKROOM: Target = Target {
    ws_path: "/graphql/ws",
    subscription: "subscription { stockChanged { movement { id balanceAfter } product { id stock } } }",
    mutation: "mutation($p: ID!) { recordStockMovement(input: { productId: $p, kind: OUTBOUND, quantity: 1 }) { id } }",
    authorized: true,
    event_id: |data| Some(data["stockChanged"]["movement"]["id"].as_str()?.to_string()),
    recorded_id: |data| Some(data["recordStockMovement"]["id"].as_str()?.to_string()),
};

const POSTGRAPHILE: Target = Target {
    ws_path: "/graphql",
    subscription: "subscription { listen(topic: \"movements\") { relatedNodeId } }",
    mutation: "mutation($p: UUID!) { createStockMovement(input: { stockMovement: { productId: $p, quantity: -1 } }) { stockMovement { id balanceAfter } } }",
    authorized: false,
    // base64 of ["stock_movements", id], as the trigger's `__node__`.
    event_id: |data| {
        use base64::Engine;
        let node = data["listen"]["relatedNodeId"].as_str()?;
        let json = base64::engine::general_purpose::STANDARD
            .decode(node)
            .ok()?;
        let node: Value = serde_json::from_slice(&json).ok()?;
        Some(node[1].as_str()?.to_string())
    },
    recorded_id: |data| {
        Some(
            data["createStockMovement"]["stockMovement"]["id"]
                .as_str()?
                .to_string(),
        )
    },
};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        eprintln!("usage: fanout URL TOKEN PRODUCT_ID SUBSCRIBERS MOVEMENTS");
        std::process::exit(2);
    }
    let (url, token, product) = (args[1].clone(), args[2].clone(), args[3].clone());
    let subscribers: usize = args[4].parse().unwrap();
    let movements: usize = args[5].parse().unwrap();
    let target = match std::env::var("FANOUT_TARGET").as_deref() {
        Ok("postgraphile") => &POSTGRAPHILE,
        Ok("stockroom") | Err(_) => &STOCKROOM,
        Ok(other) => panic!("FANOUT_TARGET is stockroom or postgraphile, not {other}"),
    };
    let ws_url = url.replace("http://", "ws://") + target.ws_path;

    // Every subscriber reports (movement id, when it arrived).
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Instant)>();
    let ready = Arc::new(Barrier::new(subscribers + 1));
    let connect_started = Instant::now();
    for i in 0..subscribers {
        let (ws_url, token, tx, ready) = (ws_url.clone(), token.clone(), tx.clone(), ready.clone());
        tokio::spawn(async move {
            let mut request = ws_url.into_client_request().unwrap();
            request.headers_mut().insert(
                "sec-websocket-protocol",
                "graphql-transport-ws".parse().unwrap(),
            );
            // tungstenite zero-fills its read buffer up to this size before
            // every read; at the default 128 KiB that memset was the client's
            // largest cost (a seventh of the machine), taken from the
            // server measured on the same two cores.
            let config = WebSocketConfig::default().read_buffer_size(4 * 1024);
            let (mut ws, _) = loop {
                match tokio_tungstenite::connect_async_with_config(
                    request.clone(),
                    Some(config),
                    true,
                )
                .await
                {
                    Ok(ok) => break ok,
                    Err(e) => {
                        eprintln!("subscriber {i}: {e}; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            };
            let payload = if target.authorized {
                json!({ "Authorization": format!("Bearer {token}") })
            } else {
                json!({})
            };
            let init = json!({ "type": "connection_init", "payload": payload });
            ws.send(Message::Text(init.to_string().into()))
                .await
                .unwrap();
            let mut acked = false;
            while let Some(msg) = ws.next().await {
                let msg = match msg {
                    Ok(msg) => msg,
                    Err(e) => panic!("subscriber {i}: {e}"),
                };
                if let Message::Close(frame) = &msg {
                    assert!(acked, "subscriber {i} closed before its ack: {frame:?}");
                }
                let Message::Text(text) = msg else { continue };
                let v: Value = serde_json::from_str(&text).unwrap();
                match v["type"].as_str() {
                    Some("connection_ack") if !acked => {
                        // Subscribing before the ack is a protocol error
                        // (graphql-ws closes with 4401).
                        acked = true;
                        let sub = json!({ "id": "1", "type": "subscribe", "payload": { "query": target.subscription } });
                        ws.send(Message::Text(sub.to_string().into()))
                            .await
                            .unwrap();
                        ready.wait().await;
                    }
                    Some("next") => {
                        let at = Instant::now();
                        let id = (target.event_id)(&v["payload"]["data"]).unwrap_or_default();
                        if tx.send((id, at)).is_err() {
                            break;
                        }
                    }
                    Some("ping") => {
                        let _ = ws.send(Message::Text(r#"{"type":"pong"}"#.into())).await;
                    }
                    _ => {}
                }
            }
        });
    }
    drop(tx);
    ready.wait().await;
    println!(
        "subscribers connected: {subscribers} in {:.1} s",
        connect_started.elapsed().as_secs_f64()
    );
    // The subscribe messages follow the ack; give the server a moment to open
    // every stream before the first event.
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("READY");
    // The driver script reads RSS with everyone connected, then says go.
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);

    let client = reqwest::Client::new();
    let mut sent: HashMap<String, (Instant, Instant)> = HashMap::new();
    for _ in 0..movements {
        let body = json!({ "query": target.mutation, "variables": { "p": product } });
        let t0 = Instant::now();
        let mut request = client.post(format!("{url}/graphql"));
        if target.authorized {
            request = request.bearer_auth(&token);
        }
        let resp: Value = request
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let t1 = Instant::now();
        let id = (target.recorded_id)(&resp["data"])
            .unwrap_or_else(|| panic!("movement not recorded: {resp}"));
        sent.insert(id, (t0, t1));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let expected = subscribers * movements;
    let mut from_response = Vec::with_capacity(expected);
    let mut from_request = Vec::with_capacity(expected);
    let mut early = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while from_response.len() < expected {
        let Ok(Some((id, at))) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            break;
        };
        let Some((t0, t1)) = sent.get(&id) else {
            continue;
        };
        from_request.push(at.duration_since(*t0).as_secs_f64() * 1000.0);
        match at.checked_duration_since(*t1) {
            Some(d) => from_response.push(d.as_secs_f64() * 1000.0),
            None => {
                early += 1;
                from_response.push(0.0);
            }
        }
    }
    from_response.sort_by(|a, b| a.total_cmp(b));
    from_request.sort_by(|a, b| a.total_cmp(b));
    println!(
        "deliveries: {} of {expected} ({early} arrived before the mutation's response)",
        from_response.len()
    );
    println!(
        "delay from the mutation's response: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&from_response, 0.5),
        percentile(&from_response, 0.99),
        percentile(&from_response, 1.0)
    );
    println!(
        "delay from the mutation's request:  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&from_request, 0.5),
        percentile(&from_request, 0.99),
        percentile(&from_request, 1.0)
    );
    println!("DONE");
    let _ = std::io::stdin().read_line(&mut line);
}
