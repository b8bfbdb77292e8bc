/*!
kvroute as an endpoint picker for Envoy-based gateways: Envoy's external
processing protocol (`envoy.service.ext_proc.v3.ExternalProcessor`) over
gRPC, as the Kubernetes Gateway API Inference Extension specifies it for an
"Endpoint Picker" (EPP). Envoy (or any gateway speaking the protocol) keeps
forwarding the requests; kvroute only decides where each goes, with the same
policies, directory (predicted, or exact from the engines' KV events),
health probes and `/metrics` polls as the router.

```text
client ─▶ Envoy ──ext_proc (gRPC)──▶ Picker ─▶ Gateway::pick ─▶ policy + directory
            │ ◀── x-gateway-destination-endpoint: 10.0.0.7:8000 ──┘
            └─▶ engine 10.0.0.7:8000 (ORIGINAL_DST cluster on that header)
```

[`serve`] runs the router's HTTP listener (health, `/metrics`, admin API,
and the OpenAI API itself) and the picker's gRPC listener over one
[`Gateway`]; [`serve_picker`] runs only the gRPC side over a gateway the
caller already serves. The gRPC listener also answers the standard gRPC
health protocol for the services `liveness`, `readiness` and
`envoy.service.ext_proc.v3.ExternalProcessor` (serving while at least one
instance takes requests).

See `docs/deploy.md` ("Behind Envoy: an endpoint picker") for the Envoy
configuration and what has been tested.
*/

mod processor;
mod server;

pub use crate::processor::{
    Picker, DESTINATION_ENDPOINT, DESTINATION_NAMESPACE, SERVED_KEY, SUBSET_KEY, SUBSET_NAMESPACE,
};
pub use crate::server::{serve, serve_picker};
pub use kvroute_gateway::Gateway;
