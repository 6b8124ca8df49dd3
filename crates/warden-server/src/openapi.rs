//! The OpenAPI 3.1 document, generated from the handlers and types.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::{
    Encoding, ExecuteAnswer, ExecuteRequest, ExecuteResponse, FileSpec, Language, LimitsSpec,
    OutputEncoding, Runtime, Runtimes, TestCase, TestCaseResult, TestCasesResponse, Verdict,
};
use crate::error::ErrorBody;
use crate::sandboxes::{CreateRequest, ExecRequest, IdleAction, Sandbox, SandboxState};
use crate::store::{CallbackState, Status};
use crate::stream::{OutputChunk, StreamOpened};
use crate::submissions::{Accepted, BatchAccepted, BatchRequest, Submission, SubmissionRequest};

#[derive(OpenApi)]
#[openapi(
    info(title = "Warden", description = "Run untrusted code in a sandbox, over HTTP (`warden serve`)."),
    paths(
        crate::server::execute,
        crate::submissions::submit,
        crate::submissions::submit_batch,
        crate::submissions::get,
        crate::server::runtimes,
        crate::server::healthz,
        crate::server::readyz,
        crate::server::openapi,
        crate::server::metrics,
        crate::sandboxes::create,
        crate::sandboxes::get,
        crate::sandboxes::delete,
        crate::sandboxes::exec,
        crate::sandboxes::pause,
        crate::sandboxes::resume,
        crate::sandboxes::put_file,
        crate::sandboxes::get_file,
        crate::stream::resume,
    ),
    components(schemas(
        ExecuteRequest, ExecuteResponse, FileSpec, Encoding, LimitsSpec, Language,
        OutputEncoding, Runtime, Runtimes, ErrorBody, SubmissionRequest, BatchRequest, Accepted,
        BatchAccepted, Submission, Status, CallbackState, CreateRequest, ExecRequest, Sandbox,
        SandboxState, IdleAction, OutputChunk, StreamOpened, ExecuteAnswer, TestCase,
        TestCaseResult, TestCasesResponse, Verdict
    )),
    modifiers(&Bearer),
)]
pub struct ApiDoc;

/// `Authorization: Bearer wdn_…` (a principal's API key).
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("wdn_ API key")
                    .build(),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_every_route() {
        let doc: serde_json::Value =
            serde_json::from_str(&ApiDoc::openapi().to_json().unwrap()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        for path in [
            "/v1/execute",
            "/v1/runtimes",
            "/healthz",
            "/readyz",
            "/openapi.json",
            "/v1/submissions",
            "/v1/submissions/batch",
            "/v1/submissions/{id}",
            "/v1/sandboxes",
            "/v1/sandboxes/{id}",
            "/v1/sandboxes/{id}/exec",
            "/v1/sandboxes/{id}/pause",
            "/v1/sandboxes/{id}/resume",
            "/v1/sandboxes/{id}/files/{path}",
            "/v1/streams/{id}",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
        let execute = &doc["paths"]["/v1/execute"]["post"];
        for status in ["200", "400", "401", "403", "413", "503"] {
            assert!(execute["responses"][status].is_object(), "{status} missing");
        }
        for route in ["/v1/execute", "/v1/sandboxes/{id}/exec"] {
            let ok = &doc["paths"][route]["post"]["responses"]["200"]["content"];
            assert!(ok["application/json"].is_object(), "{route}: {ok}");
            assert!(ok["text/event-stream"].is_object(), "{route}: {ok}");
        }
        let resume = &doc["paths"]["/v1/streams/{id}"]["get"];
        assert!(resume["responses"]["200"]["content"]["text/event-stream"].is_object());
        for status in ["400", "401", "404", "410"] {
            assert!(resume["responses"][status].is_object(), "{status} missing");
        }
        for schema in [
            "OutputChunk",
            "StreamOpened",
            "ExecuteRequest",
            "ExecuteResponse",
            "ExecuteAnswer",
            "TestCase",
            "TestCaseResult",
            "TestCasesResponse",
            "Verdict",
            "ErrorBody",
            "LimitsSpec",
            "SubmissionRequest",
            "BatchRequest",
            "Accepted",
            "BatchAccepted",
            "Submission",
            "CallbackState",
        ] {
            assert!(
                doc["components"]["schemas"][schema].is_object(),
                "{schema} missing"
            );
        }
    }
}
