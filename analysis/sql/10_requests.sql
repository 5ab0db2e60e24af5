-- requests: one row per REST request that acts (an outbound http-request frame other than GET,
-- HEAD or OPTIONS: those read, and no ack ever answers them), with its HTTP response.
-- record_handle comes from the path (/outbound-records/<handle>); operationName, referenceId,
-- campaignName, callingList and applicationId from the JSON body, parsed once at ingest into the
-- tape's http_fields table. A body that is not a JSON object leaves those columns NULL. The
-- response is the http-response frame of the same exchange_id in the same session.
CREATE OR REPLACE VIEW requests AS
WITH req AS (
    SELECT * FROM http_fields
    WHERE kind = 'http-request' AND direction = 'out'
      AND coalesce(http_method, 'POST') NOT IN ('GET', 'HEAD', 'OPTIONS')
), resp AS (
    SELECT session_id, exchange_id, t_wall_ns, http_status, status_code
    FROM http_fields
    WHERE kind = 'http-response' AND direction = 'in'
)
SELECT req.session_id, req.seq, req.exchange_id,
       req.t_wall_ns AS request_ns,
       req.http_method AS method,
       req.http_path AS path,
       nullif(regexp_extract(req.http_path, '/outbound-records/([^/?]+)', 1), '') AS record_handle,
       req.operation_name,
       req.reference_id,
       coalesce(req.campaign_name,
                nullif(regexp_extract(req.http_path, '/outbound-campaigns/([^/?]+)', 1), ''))
           AS campaign_name,
       req.calling_list,
       req.application_id,
       resp.t_wall_ns AS response_ns,
       resp.http_status AS status,
       resp.status_code
FROM req
LEFT JOIN resp ON resp.session_id = req.session_id AND resp.exchange_id = req.exchange_id;
