from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile
from fastapi.responses import JSONResponse

from serve_app.api.deps import CurrentPrincipal, State
from serve_app.errors import EduserveError, ErrorCode
from serve_app.protocol.rag import (
    CollectionCreate,
    CollectionOut,
    DocumentCreate,
    DocumentOut,
    IngestResponse,
    JobOut,
    MemberAdd,
)
from serve_app.services.documents import DocumentInput
from serve_app.services.uploads import document_from_upload
from serve_app.state import AppState

router = APIRouter(tags=["documents"])


@router.post("/v2/collections", status_code=201, response_model=CollectionOut)
async def create_collection(body: CollectionCreate, principal: CurrentPrincipal, state: State):
    """A course collection (teachers and admins)."""
    return await state.collections.create_course(principal, body.name)


@router.get("/v2/collections", response_model=list[CollectionOut])
async def list_collections(principal: CurrentPrincipal, state: State):
    """The collections the caller may read, their private one included."""
    return await state.collections.list_collections(principal)


@router.post("/v2/collections/{name}/members", status_code=204)
async def add_member(name: str, body: MemberAdd, principal: CurrentPrincipal, state: State):
    """Enrol a student in a course collection (teachers and admins)."""
    await state.collections.add_member(principal, name, body.email)
    return Response(status_code=204)


async def _ingest(state: AppState, principal, collection: str, documents: list[DocumentInput], wait: bool):
    if wait:
        results = await state.documents.ingest(principal, collection, documents)
        return JSONResponse(IngestResponse(collection=collection, documents=results).model_dump(mode="json"),
                            status_code=201)
    job = await state.documents.start_job(principal, collection, documents)
    return JSONResponse(JobOut(**job).model_dump(mode="json"), status_code=202,
                        headers={"Location": f"/v2/documents/jobs/{job['id']}"})


@router.post("/v2/documents", status_code=201, response_model=IngestResponse,
             responses={202: {"model": JobOut, "description": "wait=false: an ingest job"}})
async def create_documents(body: DocumentCreate, principal: CurrentPrincipal, state: State,
                           wait: Annotated[bool, Query(description="false: ingest in the background (202 + job)")] = True):
    """Add text or Markdown documents (one, or a batch). Content already in the collection is not added again."""
    try:
        items = body.items()
    except ValueError as exc:
        raise EduserveError(ErrorCode.VALIDATION_ERROR, str(exc)) from None
    documents = [DocumentInput(d.title, d.text, d.mime_type, d.source) for d in items]
    return await _ingest(state, principal, body.collection, documents, wait)


@router.post("/v2/documents/upload", status_code=201, response_model=IngestResponse,
             responses={202: {"model": JobOut, "description": "wait=false: an ingest job"}})
async def upload_documents(principal: CurrentPrincipal, state: State,
                           collection: Annotated[str, Form()], files: Annotated[list[UploadFile], File()],
                           wait: Annotated[bool, Query()] = True):
    """Upload PDF, Markdown or text files (multipart)."""
    limit = state.settings.rag.max_document_bytes
    documents = [await document_from_upload(upload.filename, upload.content_type, upload.read, limit)
                 for upload in files]
    return await _ingest(state, principal, collection, documents, wait)


@router.get("/v2/documents/jobs/{job_id}", response_model=JobOut)
async def read_job(job_id: str, principal: CurrentPrincipal, state: State):
    return await state.documents.job(principal, job_id)


@router.get("/v2/documents", response_model=list[DocumentOut])
async def list_documents(principal: CurrentPrincipal, state: State, collection: str = "private",
                         limit: Annotated[int, Query(ge=1, le=200)] = 50, offset: Annotated[int, Query(ge=0)] = 0):
    return await state.documents.list_documents(principal, collection, limit, offset)


@router.get("/v2/documents/{document_id}", response_model=DocumentOut)
async def read_document(document_id: str, principal: CurrentPrincipal, state: State, include_chunks: bool = False):
    return await state.documents.get_document(principal, document_id, include_chunks)


@router.delete("/v2/documents/{document_id}", status_code=204)
async def delete_document(document_id: str, principal: CurrentPrincipal, state: State):
    """Delete a document and its chunks; searches stop returning them at once (cache included)."""
    await state.documents.delete_document(principal, document_id)
    return Response(status_code=204)
