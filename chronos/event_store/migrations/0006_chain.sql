-- The hash chain (issue 18): every event's chain_hash is
--     SHA-256(previous chain_hash || canonical bytes of the event)
-- in position order, from a genesis of 32 zero bytes. docs/audit.md documents the
-- canonical encoding (version 1); chronos/audit/chain.py is its reference
-- implementation, and `chronos verify` recomputes the chain in Python from the stored
-- columns, so none of these functions needs to be trusted to check the chain.

-- The encoding of the event's own columns, everything but its position and recorded
-- time (known only under the ledger_head row lock): stream id (16 bytes), stream
-- version (8), then type, schema version (4), payload and metadata, the variable ones
-- as a 4-byte length and the bytes. The metadata is hashed as the text PostgreSQL
-- prints for the stored jsonb (keys sorted, whitespace normalized), which is what a
-- verifier reads back with metadata::text.
CREATE FUNCTION chronos_chain_body(stream_id uuid, stream_version bigint, event_type text,
                                   schema_version integer, payload bytea, metadata jsonb)
    RETURNS bytea LANGUAGE sql STABLE STRICT PARALLEL SAFE
    RETURN uuid_send(stream_id) || int8send(stream_version)
        || int4send(length(convert_to(event_type, 'UTF8'))) || convert_to(event_type, 'UTF8')
        || int4send(schema_version)
        || int4send(length(payload)) || payload
        || int4send(length(convert_to(metadata::text, 'UTF8')))
        || convert_to(metadata::text, 'UTF8');

-- One step of the chain: the encoding version byte, the position, the body and the
-- recorded time as microseconds since the Unix epoch (extract returns an exact numeric).
CREATE FUNCTION chronos_chain_step(previous bytea, event_position bigint, body bytea,
                                   recorded_at timestamptz)
    RETURNS bytea LANGUAGE sql STABLE STRICT PARALLEL SAFE
    RETURN sha256(previous || '\x01'::bytea || int8send(event_position) || body
                  || int8send((extract(epoch FROM recorded_at) * 1000000)::bigint));

ALTER TABLE ledger_head
    ADD COLUMN chain_hash bytea NOT NULL
        DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'
        CHECK (length(chain_hash) = 32);
ALTER TABLE events ADD COLUMN chain_hash bytea CHECK (length(chain_hash) = 32);

-- The chain of the events already stored. The immutability trigger refuses this UPDATE,
-- as it refuses every UPDATE: it is disabled for this one transaction only (ALTER TABLE
-- is transactional, and holds an exclusive lock on events until the commit, so no other
-- session ever sees the table without its trigger), and the only column written is the
-- new chain_hash, which no event had. The events' recorded facts are not touched.
ALTER TABLE events DISABLE TRIGGER events_no_update_or_delete;
DO $$
DECLARE
    event record;
    hash bytea := '\x0000000000000000000000000000000000000000000000000000000000000000';
BEGIN
    FOR event IN
        SELECT e.position, e.recorded_at,
               chronos_chain_body(e.stream_id, e.stream_version, e.event_type,
                                  e.schema_version, e.payload, e.metadata) AS body
        FROM events AS e ORDER BY e.position
    LOOP
        hash := chronos_chain_step(hash, event.position, event.body, event.recorded_at);
        UPDATE events SET chain_hash = hash WHERE position = event.position;
    END LOOP;
    UPDATE ledger_head SET chain_hash = hash WHERE id = 1;
END;
$$;
ALTER TABLE events ENABLE TRIGGER events_no_update_or_delete;
ALTER TABLE events ALTER COLUMN chain_hash SET NOT NULL;

-- The writer's APPEND calls this as its last step: under the ledger_head row lock
-- (the same lock that has always serialized positions; FOR UPDATE takes it, the UPDATE
-- keeps it to the commit) it takes the batch's positions and recorded time, chains the
-- batch's events in position order from the head's hash, and moves the head. One call
-- per batch, inside the APPEND statement: no new lock and no new round trip.
CREATE FUNCTION chronos_advance_head(bodies bytea[])
    RETURNS TABLE (base bigint, stamped_at timestamptz, hashes bytea[])
    LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    head_position bigint;
    head_recorded_at timestamptz;
    hash bytea;
    chained bytea[] := '{}';
    stamp bytea;
    event_count integer := coalesce(cardinality(bodies), 0);
BEGIN
    SELECT h.position, greatest(h.recorded_at, clock_timestamp()), h.chain_hash
      INTO head_position, head_recorded_at, hash
      FROM ledger_head AS h WHERE h.id = 1 FOR UPDATE;
    stamp := int8send((extract(epoch FROM head_recorded_at) * 1000000)::bigint);
    -- chronos_chain_step, unrolled here so the loop calls no function per event.
    FOR i IN 1 .. event_count LOOP
        hash := sha256(hash || '\x01'::bytea || int8send(head_position + i) || bodies[i]
                       || stamp);
        chained[i] := hash;
    END LOOP;
    UPDATE ledger_head AS h
       SET position = head_position + event_count, recorded_at = head_recorded_at,
           chain_hash = hash
     WHERE h.id = 1;
    RETURN QUERY SELECT head_position, head_recorded_at, chained;
END;
$$;
