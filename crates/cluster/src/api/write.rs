//! POST, PUT, PATCH and DELETE.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::body::{decode_object, FieldValidation};
use super::read::{current, scale_of, store_error};
use super::{json_response, Request, Shared, Target};
use crate::objects::{
    self, meta_str, name_of, prepare_create, prepare_update, sent_resource_version,
    set_resource_version, UpdateScope,
};
use crate::patch::{self, PatchError, PatchType};
use crate::resources::{ResourceType, NAMESPACES, PODS, SERVICE_ACCOUNTS};
use crate::status::{ApiError, ApiResult};
use crate::store::{Revision, StoreError};
use crate::{defaults, validation};

/// Times a write based on a fresh read is retried when another writer got in between.
const RETRIES: usize = 8;

/// The stored form: everything but `resourceVersion`, which is the store's revision.
fn stored_bytes(object: &Value) -> Vec<u8> {
    let mut object = object.clone();
    if let Some(md) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        md.remove("resourceVersion");
    }
    serde_json::to_vec(&object).unwrap_or_default()
}

fn without_version(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(md) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        md.remove("resourceVersion");
    }
    object
}

fn check_valid(rt: &ResourceType, object: &Value) -> ApiResult<()> {
    let problems = validation::validate(rt, object);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(rt, name_of(object), &problems))
    }
}

/// New content may only go into a namespace that exists and is not being deleted.
async fn ensure_namespace(s: &Shared, namespace: &str) -> ApiResult<()> {
    let t = Target::object(NAMESPACES, None, namespace);
    let (ns, _) = current(s, &t).await?;
    if ns.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("unable to create new content in namespace {namespace} because it is being terminated"),
        ));
    }
    Ok(())
}

/// Stores a new object: the whole create path, shared with the server's own writers.
pub async fn create_object(
    s: &Shared,
    rt: &ResourceType,
    namespace: Option<&str>,
    mut object: Value,
    dry_run: bool,
) -> ApiResult<Value> {
    prepare_create(rt, namespace, &mut object)?;
    let namespace = meta_str(&object, "namespace").map(str::to_string);
    if let Some(ns) = namespace.as_deref().filter(|_| rt.namespaced) {
        ensure_namespace(s, ns).await?;
    }
    defaults::apply(rt, &mut object);
    s.admission.admit(s, rt, &mut object, true).await?;
    if *rt == PODS {
        defaults::new_pod(&mut object);
    } else if rt.has_subresource("status") && *rt != NAMESPACES {
        // Status is the controllers' to write.
        if let Some(m) = object.as_object_mut() {
            m.remove("status");
        }
    }
    check_valid(rt, &object)?;
    let name = name_of(&object).to_string();
    if dry_run {
        return Ok(object);
    }
    let t = Target::object(*rt, namespace.as_deref(), &name);
    let key = rt.key(namespace.as_deref(), &name);
    let revision = s
        .store
        .create(&key, stored_bytes(&object))
        .await
        .map_err(|e| store_error(&t, e))?;
    set_resource_version(&mut object, revision);
    if *rt == NAMESPACES {
        // Every namespace has a `default` service account.
        let account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default"}});
        match Box::pin(create_object(
            s,
            &SERVICE_ACCOUNTS,
            Some(&name),
            account,
            false,
        ))
        .await
        {
            Ok(_) => {}
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(object)
}

/// Drops the fields `rt`'s schema lacks, as Kubernetes' decoding does; under `Strict` they
/// are an error, under `Warn` they come back as warnings.
fn drop_unknown_fields(
    rt: &ResourceType,
    object: &mut Value,
    validation: FieldValidation,
) -> ApiResult<Vec<String>> {
    let unknown = crate::protobuf::unknown_fields(&rt.api_version(), rt.kind, object, true);
    let listed: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    match validation {
        _ if listed.is_empty() => Ok(Vec::new()),
        FieldValidation::Ignore => Ok(Vec::new()),
        FieldValidation::Warn => Ok(listed),
        FieldValidation::Strict => Err(ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
            listed.join(", "),
            kind = rt.kind,
            version = rt.version,
        ))),
    }
}

/// A JSON response carrying `warnings` as `Warning` headers (kubectl prints them).
fn warned(code: StatusCode, object: &Value, warnings: &[String]) -> Response {
    let mut response = json_response(code, object);
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(value) = axum::http::HeaderValue::from_str(&text) {
            response.headers_mut().append("warning", value);
        }
    }
    response
}

pub async fn create(s: &Shared, t: &Target, req: &Request) -> ApiResult<Response> {
    let mut object = decode_object(req)?;
    let warnings = drop_unknown_fields(&t.rt, &mut object, FieldValidation::of(req)?)?;
    let created = create_object(s, &t.rt, t.namespace.as_deref(), object, req.dry_run()?).await?;
    Ok(warned(StatusCode::CREATED, &created, &warnings))
}

/// What an update attempt came to.
enum Attempt {
    Done(Value),
    /// Another writer changed the object since it was read: read again and retry.
    Raced,
}

/// Writes `new` over `old` (read at `revision`), or deletes it if the update removed the
/// last finalizer of an object being deleted.
async fn write_update(
    s: &Shared,
    t: &Target,
    old: &Value,
    revision: Revision,
    mut new: Value,
    scope: UpdateScope,
    dry_run: bool,
) -> ApiResult<Attempt> {
    prepare_update(&t.rt, old, &mut new, scope)?;
    defaults::apply(&t.rt, &mut new);
    if scope == UpdateScope::Main {
        s.admission.admit(s, &t.rt, &mut new, false).await?;
    }
    check_valid(&t.rt, &new)?;
    let key = t
        .key()
        .ok_or_else(|| ApiError::bad_request("no name given"))?;
    if without_version(&new) == without_version(old) {
        return Ok(Attempt::Done(old.clone()));
    }
    if dry_run {
        return Ok(Attempt::Done(new));
    }
    let finished = new.pointer("/metadata/deletionTimestamp").is_some()
        && new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
    let result = if finished {
        s.store.delete(&key, Some(revision)).await.map(|(r, _)| r)
    } else {
        s.store.update(&key, stored_bytes(&new), revision).await
    };
    match result {
        Ok(r) => {
            set_resource_version(&mut new, r);
            Ok(Attempt::Done(new))
        }
        Err(StoreError::Conflict { .. }) => Ok(Attempt::Raced),
        Err(e) => Err(store_error(t, e)),
    }
}

fn scope_of(t: &Target) -> UpdateScope {
    if t.subresource.as_deref() == Some("status") {
        UpdateScope::Status
    } else {
        UpdateScope::Main
    }
}

pub async fn update(s: &Shared, t: &Target, req: &Request) -> ApiResult<Response> {
    let mut new = decode_object(req)?;
    let warnings = drop_unknown_fields(&t.rt, &mut new, FieldValidation::of(req)?)?;
    let dry_run = req.dry_run()?;
    let sent = sent_resource_version(&new)?;
    for _ in 0..RETRIES {
        let (old, revision) = current(s, t).await?;
        if sent.is_some_and(|v| v != revision) {
            return Err(ApiError::conflict(&t.rt, t.name()));
        }
        match write_update(s, t, &old, revision, new.clone(), scope_of(t), dry_run).await? {
            Attempt::Done(object) => return Ok(warned(StatusCode::OK, &object, &warnings)),
            Attempt::Raced if sent.is_some() => return Err(ApiError::conflict(&t.rt, t.name())),
            Attempt::Raced => continue,
        }
    }
    Err(ApiError::conflict(&t.rt, t.name()))
}

/// Changes the object at `t` by `edit` of its current state, retrying when another writer
/// gets in between (Kubernetes' guaranteed update). `edit` returns `None` to leave the
/// object as it is. Controllers write through this.
pub async fn modify(
    s: &Shared,
    t: &Target,
    scope: UpdateScope,
    edit: impl Fn(&Value) -> ApiResult<Option<Value>>,
) -> ApiResult<Option<Value>> {
    for _ in 0..RETRIES {
        let (old, revision) = current(s, t).await?;
        let Some(new) = edit(&old)? else {
            return Ok(None);
        };
        match write_update(s, t, &old, revision, new, scope, false).await? {
            Attempt::Done(object) => return Ok(Some(object)),
            Attempt::Raced => continue,
        }
    }
    Err(ApiError::conflict(&t.rt, t.name()))
}

fn patch_error(e: PatchError) -> ApiError {
    let code = StatusCode::from_u16(e.status_code()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
    let reason = match code {
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::PAYLOAD_TOO_LARGE => "RequestEntityTooLarge",
        _ => "Invalid",
    };
    ApiError::new(code, reason, e.to_string())
}

/// Reads, patches and writes back, retrying when another writer gets in between (unless
/// the patch itself names the version it applies to). The patch applies to `view` of the
/// current object; `merge_back` turns the current object and the patched view into the
/// object to write. Returns the object written and the warnings for the client.
async fn patch_with(
    s: &Shared,
    t: &Target,
    req: &Request,
    view: impl Fn(&Value) -> Value,
    merge_back: impl Fn(&Value, &Value) -> ApiResult<Value>,
) -> ApiResult<(Value, Vec<String>)> {
    let content_type = req.header("content-type").unwrap_or("");
    let patch_type = PatchType::from_content_type(content_type)
        .ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
    if req.body.len() > objects::MAX_OBJECT_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "the patch is too large",
        ));
    }
    let validation = FieldValidation::of(req)?;
    let dry_run = req.dry_run()?;
    for _ in 0..RETRIES {
        let (old, revision) = current(s, t).await?;
        let patched =
            patch::apply(t.rt.kind, patch_type, &view(&old), &req.body).map_err(patch_error)?;
        let mut wanted = merge_back(&old, &patched)?;
        let warnings = drop_unknown_fields(&t.rt, &mut wanted, validation)?;
        let pinned = sent_resource_version(&wanted)?;
        if pinned.is_some_and(|v| v != revision) {
            return Err(ApiError::conflict(&t.rt, t.name()));
        }
        match write_update(s, t, &old, revision, wanted, scope_of(t), dry_run).await? {
            Attempt::Done(object) => return Ok((object, warnings)),
            Attempt::Raced => continue,
        }
    }
    Err(ApiError::conflict(&t.rt, t.name()))
}

pub async fn patch(s: &Shared, t: &Target, req: &Request) -> ApiResult<Response> {
    let (object, warnings) =
        patch_with(s, t, req, Value::clone, |_, patched| Ok(patched.clone())).await?;
    Ok(warned(StatusCode::OK, &object, &warnings))
}

/// The object with `spec.replicas` taken from a Scale.
fn with_scale(old: &Value, scale: &Value) -> ApiResult<Value> {
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .ok_or_else(|| ApiError::bad_request("spec.replicas of the Scale must be an integer"))?;
    let mut object = old.clone();
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("replicas".into(), json!(replicas));
    }
    if let Some(rv) = scale.pointer("/metadata/resourceVersion") {
        if let Some(md) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            md.insert("resourceVersion".into(), rv.clone());
        }
    }
    Ok(object)
}

pub async fn update_scale(s: &Shared, t: &Target, req: &Request) -> ApiResult<Response> {
    let scale = decode_object(req)?;
    let main = t.with_subresource(None);
    let sent = sent_resource_version(&scale)?;
    for _ in 0..RETRIES {
        let (old, revision) = current(s, &main).await?;
        if sent.is_some_and(|v| v != revision) {
            return Err(ApiError::conflict(&t.rt, t.name()));
        }
        let new = with_scale(&old, &scale)?;
        match write_update(
            s,
            &main,
            &old,
            revision,
            new,
            UpdateScope::Main,
            req.dry_run()?,
        )
        .await?
        {
            Attempt::Done(object) => return Ok(json_response(StatusCode::OK, &scale_of(&object))),
            Attempt::Raced if sent.is_some() => return Err(ApiError::conflict(&t.rt, t.name())),
            Attempt::Raced => continue,
        }
    }
    Err(ApiError::conflict(&t.rt, t.name()))
}

pub async fn patch_scale(s: &Shared, t: &Target, req: &Request) -> ApiResult<Response> {
    let main = t.with_subresource(None);
    // The patch applies to the Scale; its result sets the object's replicas.
    let (object, warnings) = patch_with(s, &main, req, scale_of, with_scale).await?;
    Ok(warned(StatusCode::OK, &scale_of(&object), &warnings))
}

/// How a delete treats the object's dependents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Delete the object now; the garbage collector deletes dependents afterwards.
    Background,
    /// Delete dependents first, the object once they are gone.
    Foreground,
    /// Keep dependents, removing their owner reference.
    Orphan,
}

pub struct DeleteOptions {
    pub propagation: Propagation,
    uid: Option<String>,
    resource_version: Option<String>,
    grace_period: Option<i64>,
    dry_run: bool,
}

impl DeleteOptions {
    /// A plain delete with dependents collected afterwards, as the garbage collector makes.
    pub fn background() -> DeleteOptions {
        DeleteOptions {
            propagation: Propagation::Background,
            uid: None,
            resource_version: None,
            grace_period: None,
            dry_run: false,
        }
    }
}

fn delete_options(req: &Request) -> ApiResult<DeleteOptions> {
    let body: Value = if req.body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&req.body).map_err(|e| {
            ApiError::bad_request(format!("the DeleteOptions body is not valid JSON: {e}"))
        })?
    };
    let policy = req
        .param("propagationPolicy")
        .map(str::to_string)
        .or_else(|| body["propagationPolicy"].as_str().map(str::to_string))
        .or_else(|| match body["orphanDependents"].as_bool() {
            Some(true) => Some("Orphan".into()),
            Some(false) => Some("Background".into()),
            None => None,
        });
    let propagation = match policy.as_deref() {
        None | Some("Background") => Propagation::Background,
        Some("Foreground") => Propagation::Foreground,
        Some("Orphan") => Propagation::Orphan,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            )))
        }
    };
    let grace_period = match req.param("gracePeriodSeconds") {
        Some(g) => Some(
            g.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?,
        ),
        None => body["gracePeriodSeconds"].as_i64(),
    };
    let dry_run = req.dry_run()?
        || body["dryRun"]
            .as_array()
            .is_some_and(|d| d.iter().any(|v| v == "All"));
    Ok(DeleteOptions {
        propagation,
        uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        resource_version: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
        grace_period,
        dry_run,
    })
}

/// Deletes one object as `options` say. Returns the object as it was last stored.
pub async fn delete_object(s: &Shared, t: &Target, options: &DeleteOptions) -> ApiResult<Value> {
    let key = t
        .key()
        .ok_or_else(|| ApiError::bad_request("no name given"))?;
    for _ in 0..RETRIES {
        let (old, revision) = current(s, t).await?;
        let uid = meta_str(&old, "uid").unwrap_or("");
        if let Some(want) = options.uid.as_deref().filter(|w| *w != uid) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": Precondition failed: UID in precondition: {want}, UID in object meta: {uid}",
                    t.rt.group_resource(),
                    t.name()
                ),
            ));
        }
        if let Some(want) = options
            .resource_version
            .as_deref()
            .filter(|w| *w != revision.to_string())
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {revision}",
                    t.rt.group_resource(),
                    t.name()
                ),
            ));
        }
        let mut finalizers: Vec<Value> = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let add = match options.propagation {
            Propagation::Foreground => Some("foregroundDeletion"),
            Propagation::Orphan => Some("orphan"),
            Propagation::Background => None,
        };
        if let Some(f) = add {
            if !finalizers.iter().any(|x| x == f) {
                finalizers.push(json!(f));
            }
        }
        // A pod on a node ends gracefully: the node stops it, then deletes it.
        let grace = if t.rt == PODS
            && old
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty())
            && old
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .is_none_or(|p| p != "Succeeded" && p != "Failed")
        {
            options.grace_period.unwrap_or_else(|| {
                old.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(30)
            })
        } else {
            0
        };
        let keep = !finalizers.is_empty() || grace > 0 || t.rt == NAMESPACES;
        if options.dry_run {
            return Ok(old);
        }
        if keep {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(old);
            }
            let mut marked = old.clone();
            if let Some(md) = marked.get_mut("metadata").and_then(Value::as_object_mut) {
                let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(grace);
                md.insert("deletionTimestamp".into(), json!(objects::timestamp(at)));
                md.insert("deletionGracePeriodSeconds".into(), json!(grace));
                if !finalizers.is_empty() {
                    md.insert("finalizers".into(), json!(finalizers));
                }
            }
            if t.rt == NAMESPACES {
                if let Some(status) = marked.get_mut("status").and_then(Value::as_object_mut) {
                    status.insert("phase".into(), json!("Terminating"));
                }
            }
            match s.store.update(&key, stored_bytes(&marked), revision).await {
                Ok(r) => {
                    set_resource_version(&mut marked, r);
                    return Ok(marked);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(t, e)),
            }
        }
        match s.store.delete(&key, Some(revision)).await {
            Ok(_) => return Ok(old),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(store_error(t, e)),
        }
    }
    Err(ApiError::conflict(&t.rt, t.name()))
}

pub async fn delete(s: &Shared, t: &Target, req: &Request) -> ApiResult<Response> {
    let options = delete_options(req)?;
    let object = delete_object(s, t, &options).await?;
    Ok(json_response(StatusCode::OK, &object))
}

pub async fn delete_collection(s: &Shared, t: &Target, req: &Request) -> ApiResult<Response> {
    let options = delete_options(req)?;
    let filter = super::read::Filter::of(req)?;
    let listing = Request {
        query: Default::default(),
        headers: Default::default(),
        body: Default::default(),
    };
    let (objects, _, _) = super::read::list(s, t, &listing, &filter).await?;
    let mut deleted = Vec::new();
    for object in objects {
        let one = Target::object(t.rt, meta_str(&object, "namespace"), name_of(&object));
        match delete_object(s, &one, &options).await {
            Ok(o) => deleted.push(o),
            Err(e) if e.reason == "NotFound" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", t.rt.kind),
            "apiVersion": t.rt.api_version(),
            "metadata": {},
            "items": deleted,
        }),
    ))
}
