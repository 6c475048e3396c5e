package io.nbdtail.server;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.nbdtail.volume.VolumeService;
import org.junit.jupiter.api.Test;

import java.time.Instant;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** {@code mirror.json}: read as strictly as the other records, and readable after an upgrade added a field. */
class OwnershipTest {
    private static final ObjectMapper JSON = VolumeService.mapper();

    @Test
    void aRecordReadsBackAsWritten() throws Exception {
        final Ownership written = new Ownership(Ownership.RECEIVING, 3, "10.0.0.0/24", "s-1", "s-0", "ab12", "id-9",
            true, "10.20.0.17:10809", "psk:tail-3", Instant.parse("2026-11-23T10:00:00.123Z"));
        assertThat(JSON.readValue(JSON.writeValueAsBytes(written), Ownership.class)).isEqualTo(written);
    }

    @Test
    void aRecordWrittenBeforeSourceIdentityExistedStillReads() throws Exception {
        final String old = "{\"state\":\"moved\",\"epoch\":1,\"peer\":\"10.0.0.9:10809\",\"session\":null,"
            + "\"cancelledSession\":null,\"tokenSha256\":null,\"originId\":null,\"written\":false,"
            + "\"serviceAddress\":null,\"changed\":\"2026-11-22T09:00:00Z\"}";
        final Ownership read = JSON.readValue(old, Ownership.class);
        assertThat(read.state()).isEqualTo(Ownership.MOVED);
        assertThat(read.epoch()).isEqualTo(1);
        assertThat(read.sourceIdentity()).isNull();
        assertThat(read.changed()).isEqualTo(Instant.parse("2026-11-22T09:00:00Z"));
    }

    @Test
    void aDamagedRecordIsRefusedWithWhatIsWrong() {
        assertThatThrownBy(() -> JSON.readValue("{\"state\":\"serving\",\"epoch\":0}", Ownership.class))
            .hasMessageContaining("missing field 'peer'");
        assertThatThrownBy(() -> JSON.readValue("{\"state\":\"serving\",\"epoch\":0,\"peer\":null,\"session\":null,"
            + "\"cancelledSession\":null,\"tokenSha256\":null,\"originId\":null,\"written\":false,"
            + "\"serviceAddress\":null,\"changed\":null,\"owner\":\"me\"}", Ownership.class))
            .hasMessageContaining("unknown field 'owner'");
        assertThatThrownBy(() -> JSON.readValue("{\"state\":\"serving\",\"epoch\":\"zero\",\"peer\":null,"
            + "\"session\":null,\"cancelledSession\":null,\"tokenSha256\":null,\"originId\":null,\"written\":false,"
            + "\"serviceAddress\":null,\"changed\":null}", Ownership.class))
            .hasMessageContaining("wrong type");
    }
}
