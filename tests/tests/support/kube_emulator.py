"""A Kubernetes API *emulator* (kmock) used in place of a real API server (test double).

A real kube-apiserver (with etcd) cannot run on this machine, so the integration tests talk
to this in-memory emulator instead. It is kmock's `KubernetesEmulator` (PyPI `kmock`, by the
author of kopf) served over plain HTTP on loopback, with a thin layer on top where kmock is
too simplistic for kube-rs:

* created objects get metadata.namespace/uid/resourceVersion/creationTimestamp/generation
  (kmock stores bodies verbatim; without metadata.namespace its namespaced watches drop
  every event after the initial replay), and `generateName` is honoured;
* every write bumps a global integer resourceVersion; LIST returns it plus
  `apiVersion`/`kind: <Kind>List`; WATCH skips events at or below `?resourceVersion=N`
  (N > 0), and ends cleanly after `?timeoutSeconds=`;
* LIST of a resource with no objects yet is an empty list (kmock says 404);
* `?watch=1` counts as a watch (kmock only knows `watch=true`);
* simple `fieldSelector` (metadata.name / metadata.namespace) and `labelSelector`
  (=, ==, !=, in, notin, exists, !exists) filtering for LIST and WATCH;
* PATCH of the `status` subresource changes only `.status` (merge or JSON patch);
* errors are Kubernetes `Status` bodies with real reasons (`AlreadyExists`, `NotFound`, ...);
  create answers 201; the watch stream is `application/json` lines.

kmock's own behaviour is kept for the rest: in-memory store, 409 on a duplicate name,
merge-patch (JSON-patch when the body is a list), delete (immediate unless finalizers),
watches of ADDED/MODIFIED/DELETED events. Not emulated: PUT (replace), server-side-apply
creating absent objects, watch bookmarks, 410 Gone, controllers (nothing runs Jobs; a test
plays the kubelet/job controller by patching `/status`).

* `--job-quota N` plays an object-count ResourceQuota (`count/jobs.batch: N`) in every
  namespace: creating a Job while N exist is refused with 403 Forbidden "exceeded quota", as
  the real quota admission answers.

Usage: kube_emulator.py [PORT] [--job-quota N]    (port 0 or absent = pick a free port)
Prints `listening <port>` once ready and serves on 127.0.0.1 until killed.
"""
import asyncio
import datetime
import itertools
import re
import secrets
import sys
import traceback
import uuid
from typing import Any

import aiohttp.web
import kmock
from kmock._internal import k8s

_rv = itertools.count(1)
JOB_QUOTA: int | None = None

# Job is what the tests use; other resources still work, their kind is guessed for lists.
RESOURCES = {
    'batch/v1/jobs': kmock.ResourceInfo(
        kind='Job', singular='job', namespaced=True, subresources={'status'},
        verbs={'create', 'delete', 'get', 'list', 'patch', 'watch'}),  # no PUT (update)
}


def _now() -> str:
    return datetime.datetime.now(tz=datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def _rv_int(obj: Any) -> int:
    try:
        return int(obj.get('metadata', {}).get('resourceVersion'))
    except (TypeError, ValueError, AttributeError):
        return 0


def _split_selector(s: str) -> list[str]:
    return [t.strip() for t in re.split(r',(?![^()]*\))', s) if t.strip()]


def _field_ok(obj: dict[str, Any], selector: str) -> bool:
    for term in _split_selector(selector):
        m = re.fullmatch(r'([\w.]+)\s*(==|!=|=)\s*(.*)', term)
        if not m:
            continue
        key, op, want = m.groups()
        have: Any = obj
        for part in key.split('.'):
            have = have.get(part) if isinstance(have, dict) else None
        have = '' if have is None else str(have)
        if (have == want) != (op != '!='):
            return False
    return True


def _label_ok(obj: dict[str, Any], selector: str) -> bool:
    labels = (obj.get('metadata') or {}).get('labels') or {}
    for term in _split_selector(selector):
        if m := re.fullmatch(r'([^\s!=]+)\s+(in|notin)\s+\((.*)\)', term):
            key, op, vals = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(',')}
            if (labels.get(key) in vals) != (op == 'in'):
                return False
        elif m := re.fullmatch(r'([^\s!=]+)\s*(==|!=|=)\s*(.*)', term):
            key, op, want = m.groups()
            if (labels.get(key) == want) != (op != '!='):
                return False
        elif term.startswith('!'):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def _selected(request: kmock.Request, obj: Any) -> bool:
    if not isinstance(obj, dict):
        return True
    return (_field_ok(obj, request.params.get('fieldSelector', ''))
            and _label_ok(obj, request.params.get('labelSelector', '')))


class KubeEmulator(kmock.KubernetesEmulator):

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for key, info in RESOURCES.items():
            self.resources[key] = info
        # Same handler as kmock's fallback, one notch above it, with the content type set.
        (self.fallback ** 1)[kmock.action.WATCH] << kmock.headers({'Content-Type': 'application/json'}) << self._serve_watch

    # -- helpers ------------------------------------------------------------------------

    def _kind(self, resource: Any) -> str:
        for res in self.resources:
            if res == resource and self.resources[res].kind:
                return self.resources[res].kind
        plural = resource.plural or ''
        return (plural[:-1] if plural.endswith('s') else plural).capitalize()

    def _api_version(self, resource: Any) -> str:
        return f'{resource.group}/{resource.version}' if resource.group else resource.version

    def _live(self, key: tuple[Any, Any, Any]) -> Any:
        if key in self.objects and not self.objects[key].deleted:
            return self.objects[key]
        return None

    def _error(self, status: int, reason: str, request: kmock.Request, name: str | None, message: str) -> k8s.KubernetesError:
        details: dict[str, Any] = {'kind': request.resource.plural}
        if request.resource.group:
            details['group'] = request.resource.group
        if name:
            details['name'] = name
        return k8s.KubernetesError(status=status, reason=reason, message=message, details=details)

    def _qualified(self, request: kmock.Request) -> str:
        r = request.resource
        return f'{r.plural}.{r.group}' if r.group else r.plural

    # -- request pre-processing (before kmock stores anything) -----------------------------

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.resource is None or request.resource.plural is None:
            return await super()._handle(request)

        if request.method == kmock.method.GET and request.params.get('watch', '').lower() in ('1', 'true'):
            object.__setattr__(request, 'action', kmock.action.WATCH)

        key = (request.resource, request.namespace, request.name)
        if request.action == kmock.action.CREATE:
            data = request.data
            if not isinstance(data, dict):
                raise self._error(400, 'BadRequest', request, None, 'the body of the request was not a JSON object')
            meta = data.setdefault('metadata', {})
            if not meta.get('name') and meta.get('generateName'):
                meta['name'] = meta['generateName'] + ''.join(secrets.choice('bcdfghjklmnpqrstvwxz2456789') for _ in range(5))
            name = meta.get('name')
            if not name:
                raise self._error(422, 'Invalid', request, None, 'metadata.name: Required value: name or generateName is required')
            if request.namespace is not None:
                if meta.get('namespace') not in (None, request.namespace):
                    raise self._error(400, 'BadRequest', request, name, 'the namespace of the provided object does not match the namespace sent on the request')
                meta['namespace'] = request.namespace
            if self._live((request.resource, meta.get('namespace'), name)) is not None:
                raise self._error(409, 'AlreadyExists', request, name, f'{self._qualified(request)} "{name}" already exists')
            if JOB_QUOTA is not None and request.resource.plural == 'jobs':
                used = sum(1 for (res, ns, _), obj in self.objects.items()
                           if res == request.resource and ns == meta.get('namespace') and not obj.deleted)
                if used >= JOB_QUOTA:
                    raise self._error(403, 'Forbidden', request, name,
                                      f'{self._qualified(request)} "{name}" is forbidden: exceeded quota: jobs, '
                                      f'requested: count/jobs.batch=1, used: count/jobs.batch={used}, limited: count/jobs.batch={JOB_QUOTA}')
            data.setdefault('apiVersion', self._api_version(request.resource))
            data.setdefault('kind', self._kind(request.resource))
            meta.update(uid=str(uuid.uuid4()), resourceVersion=str(next(_rv)), creationTimestamp=_now(), generation=1)
            meta.pop('deletionTimestamp', None)

        elif request.action in (kmock.action.FETCH, kmock.action.UPDATE, kmock.action.DELETE):
            obj = self._live(key)
            if obj is None:
                raise self._error(404, 'NotFound', request, request.name, f'{self._qualified(request)} "{request.name}" not found')
            if request.action == kmock.action.UPDATE:
                rv = str(next(_rv))
                data = request.data
                status_only = request.subresource == 'status'
                if isinstance(data, dict):
                    if status_only:
                        data = {'status': data['status']} if 'status' in data else {}
                    data.setdefault('metadata', {})
                    if not isinstance(data['metadata'], dict):
                        data['metadata'] = {}
                    data['metadata']['resourceVersion'] = rv
                    if not status_only and data.get('spec') is not None:
                        data['metadata']['generation'] = int(obj.get('metadata', {}).get('generation', 1)) + 1
                elif isinstance(data, list):  # JSON patch
                    if status_only:
                        data = [op for op in data if str(op.get('path', '')).startswith('/status')]
                    data = data + [{'op': 'add', 'path': '/metadata/resourceVersion', 'value': rv}]
                else:
                    raise self._error(400, 'BadRequest', request, request.name, 'the body of the request was not JSON')
                object.__setattr__(request, 'data', data)
            elif request.action == kmock.action.DELETE:
                obj.patch({'metadata': {'resourceVersion': str(next(_rv))}})  # the DELETED event carries a new RV

        response = await super()._handle(request)
        if request.action == kmock.action.CREATE and response.status == 200 and not response.prepared:
            response.set_status(201)
        return response

    # -- readers ----------------------------------------------------------------------------

    async def _serve_list(self, request: kmock.Request) -> Any:
        items = []
        for (resource, namespace, _), obj in self.objects.items():
            if resource != request.resource or obj.deleted:
                continue
            if request.namespace is not None and namespace != request.namespace:
                continue
            if _selected(request, obj.raw):
                items.append(obj.raw)
        return {
            'apiVersion': self._api_version(request.resource),
            'kind': f'{self._kind(request.resource)}List',
            'metadata': {'resourceVersion': str(next(_rv))},
            'items': items,
        }

    async def _serve_watch(self, request: kmock.Request) -> Any:
        try:
            since = int(request.params.get('resourceVersion') or 0)
        except ValueError:
            since = 0
        try:
            timeout = float(request.params.get('timeoutSeconds') or 0)
        except ValueError:
            timeout = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout > 0 else None
        events = aiter(super()._serve_watch(request))
        try:
            while True:
                remaining = None if deadline is None else max(deadline - loop.time(), 0)
                try:
                    event = await asyncio.wait_for(anext(events), remaining)
                except (StopAsyncIteration, TimeoutError):
                    return  # ends the HTTP stream cleanly (chunked EOF), like timeoutSeconds
                if isinstance(event, dict):
                    obj = event.get('object')
                    if since and _rv_int(obj) <= since:
                        continue
                    if not _selected(request, obj):
                        continue
                yield event
        finally:
            await events.aclose()

    # -- errors as Kubernetes Status ---------------------------------------------------------

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, k8s.KubernetesObjectConflictError):
            status, reason, message, details = 409, 'AlreadyExists', exc.message, None
        elif isinstance(exc, k8s.KubernetesNotFoundError):
            status, reason, message, details = 404, 'NotFound', exc.message, None
        elif isinstance(exc, k8s.KubernetesError):
            status, reason, message, details = exc.status, exc.reason, exc.message, exc.details
        elif isinstance(exc, ValueError):  # e.g. kmock's "Cannot patch a dict by a scalar"
            status, reason, message, details = 422, 'Invalid', str(exc), None
        else:
            traceback.print_exc(file=sys.stderr)
            status, reason, message, details = 500, 'InternalError', repr(exc), None
        return aiohttp.web.json_response({
            'apiVersion': 'v1', 'kind': 'Status', 'metadata': {},
            'status': 'Failure', 'reason': reason or 'Unknown', 'message': message or '',
            'details': details or {}, 'code': status,
        }, status=status)


async def main() -> None:
    global JOB_QUOTA
    args = sys.argv[1:]
    if '--job-quota' in args:
        i = args.index('--job-quota')
        JOB_QUOTA = int(args[i + 1])
        del args[i:i + 2]
    port = int(args[0]) if args else 0
    async with KubeEmulator() as emulator, kmock.Server(emulator, host='127.0.0.1', port=port or None) as server:
        print(f'listening {server.port}', flush=True)
        await asyncio.Event().wait()


if __name__ == '__main__':
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
