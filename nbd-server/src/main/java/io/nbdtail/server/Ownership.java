package io.nbdtail.server;

import com.fasterxml.jackson.annotation.JsonCreator;

import java.time.Instant;
import java.time.format.DateTimeParseException;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Who owns a volume, as stored in its {@code mirror.json} (see {@code docs/mirroring.md}). A volume without the
 * record is {@code serving} at epoch 0.
 *
 * @param state            {@code serving}; {@code receiving} (a mirror destination: not served, written only by
 *                         the authenticated source); {@code handing-over} (a source between its freeze and the
 *                         destination's answer: not served until resolved); {@code moved} (fenced: never served
 *                         again).
 * @param epoch            ownership generation; a cutover hands over {@code epoch + 1}.
 * @param peer             the destination ({@code handing-over}, {@code moved}) or the source's address or
 *                         network ({@code receiving}; {@code null}: any).
 * @param session          the mirror session whose copy a receiving volume holds.
 * @param cancelledSession a session whose cutover this receiving volume refused for good (after an unknown
 *                         outcome was resolved).
 * @param tokenSha256      SHA-256 (hex) of the shared secret a mirror source must present.
 * @param originId         the source volume's id, adopted at the first hello.
 * @param written          whether any session has written to a receiving volume (else holes need not be sent).
 * @param serviceAddress   the volume's own {@code ADDR:PORT}, bound (with IP_FREEBIND) while this tail serves it
 *                         and taken over by the destination of a mirror; {@code null}: only the server's listener.
 * @param sourceIdentity   the TLS identity ({@code dn:SUBJECT} or {@code psk:IDENTITY}) a mirror source must have
 *                         proved, in addition to the token; {@code null}: any (or no) TLS.
 * @param changed          when the record was written.
 */
public record Ownership(String state, long epoch, String peer, String session, String cancelledSession,
                        String tokenSha256, String originId, boolean written, String serviceAddress,
                        String sourceIdentity, Instant changed) {
    /** Fields that a record written by an older version may lack; they read as {@code null}. */
    private static final Set<String> ADDED_LATER = Set.of("sourceIdentity");
    /** In declaration order, so that the first missing one is named. */
    private static final List<String> FIELDS = List.of("state", "epoch", "peer", "session", "cancelledSession",
        "tokenSha256", "originId", "written", "serviceAddress", "sourceIdentity", "changed");

    public static final String SERVING = "serving";
    public static final String RECEIVING = "receiving";
    public static final String HANDING_OVER = "handing-over";
    public static final String MOVED = "moved";

    public static final Ownership DEFAULT = new Ownership(SERVING, 0, null, null, null, null, null, false, null,
        null, null);

    public Ownership with(final String newState, final long newEpoch, final String newPeer) {
        return new Ownership(newState, newEpoch, newPeer, session, cancelledSession, tokenSha256, originId, written,
            serviceAddress, sourceIdentity, Instant.now());
    }

    public Ownership withSession(final String newSession, final String newOriginId, final long newEpoch) {
        return new Ownership(state, newEpoch, peer, newSession, cancelledSession, tokenSha256, newOriginId, true,
            serviceAddress, sourceIdentity, Instant.now());
    }

    public Ownership cancel() {
        return new Ownership(state, epoch, peer, null, session, tokenSha256, originId, written, serviceAddress,
            sourceIdentity, Instant.now());
    }

    public Ownership withServiceAddress(final String address) {
        return new Ownership(state, epoch, peer, session, cancelledSession, tokenSha256, originId, written, address,
            sourceIdentity, Instant.now());
    }

    public boolean served() {
        return state.equals(SERVING);
    }

    /**
     * Reads {@code mirror.json} as strictly as the other records (an unknown field, a missing one or a wrong type
     * is a damaged file), except that a field added after the record first shipped may be absent, so that a tail
     * upgraded in place still reads what it wrote before.
     */
    @JsonCreator(mode = JsonCreator.Mode.DELEGATING)
    static Ownership fromJson(final Map<String, Object> json) {
        for (final String key : json.keySet()) {
            if (!FIELDS.contains(key)) {
                throw new IllegalArgumentException("unknown field '" + key + "'");
            }
        }
        for (final String key : FIELDS) {
            if (!json.containsKey(key) && !ADDED_LATER.contains(key)) {
                throw new IllegalArgumentException("missing field '" + key + "'");
            }
        }
        if (!(json.get("state") instanceof String)) {
            throw new IllegalArgumentException("'state' must be a string");
        }
        try {
            final Object changed = json.get("changed");
            return new Ownership((String) json.get("state"), ((Number) json.get("epoch")).longValue(),
                (String) json.get("peer"), (String) json.get("session"), (String) json.get("cancelledSession"),
                (String) json.get("tokenSha256"), (String) json.get("originId"), (Boolean) json.get("written"),
                (String) json.get("serviceAddress"), (String) json.get("sourceIdentity"),
                changed == null ? null : Instant.parse((String) changed));
        } catch (final ClassCastException | NullPointerException | DateTimeParseException e) {
            throw new IllegalArgumentException("a field has the wrong type or is null: " + e.getMessage(), e);
        }
    }
}
