package io.nbdtail.nbd.tls;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import javax.security.auth.x500.X500Principal;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** What a wrong TLS configuration says at start-up, and how identities are matched. */
class NbdTlsConfigTest {
    @TempDir
    Path dir;

    @Test
    void offIsTheDefaultAndBuildsNothing() throws Exception {
        assertThat(NbdTls.create(new TlsConfig())).isNull();
        assertThat(NbdTls.create(null)).isNull();
    }

    @Test
    void anUnknownModeNamesTheChoices() {
        final TlsConfig c = new TlsConfig();
        c.mode = "on";
        assertThatThrownBy(() -> NbdTls.create(c)).hasMessageContaining("use off, optional or required");
    }

    @Test
    void tlsNeedsExactlyOneKindOfCredential() throws Exception {
        final TlsConfig none = new TlsConfig();
        none.mode = "required";
        assertThatThrownBy(() -> NbdTls.create(none)).hasMessageContaining("set exactly one of");
        final TlsConfig both = new TlsConfig();
        both.mode = "required";
        both.certificates = dir.toString();
        both.pskFile = dir.resolve("keys.psk").toString();
        assertThatThrownBy(() -> NbdTls.create(both)).hasMessageContaining("set exactly one of");
    }

    @Test
    void missingCertificateFilesAreNamed() {
        final TlsConfig c = new TlsConfig();
        c.mode = "optional";
        c.certificates = dir.toString();
        assertThatThrownBy(() -> NbdTls.create(c)).hasMessageContaining("server-cert.pem")
            .hasMessageContaining("ca-cert.pem");
    }

    @Test
    void certificateSubjectsNeedVerifiedClientCertificates() throws Exception {
        final TlsConfig c = new TlsConfig();
        c.mode = "required";
        c.pskFile = psk("alice:" + "00".repeat(32)).toString();
        c.authorization = Map.of("vol", List.of("dn:CN=alice"));
        assertThatThrownBy(() -> NbdTls.create(c)).hasMessageContaining("client certificates are not verified");
    }

    @Test
    void identitiesMustSayWhatTheyAre() {
        assertThatThrownBy(() -> ClientIdentity.parse("CN=alice")).hasMessageContaining("use dn:SUBJECT");
        assertThatThrownBy(() -> ClientIdentity.parse("psk:")).hasMessageContaining("psk:IDENTITY");
        assertThatThrownBy(() -> ClientIdentity.parse("dn:not a dn")).hasMessageContaining("RFC 2253");
    }

    @Test
    void subjectsCompareAsNamesNotStrings() {
        assertThat(ClientIdentity.parse("dn:cn=Host-A,  O=Tenant A"))
            .isEqualTo(new ClientIdentity.Certificate(new X500Principal("CN=host-a,O=tenant a")));
        assertThat(ClientIdentity.parse("dn:CN=host-a,O=Tenant A"))
            .isNotEqualTo(ClientIdentity.parse("dn:CN=host-a,O=Tenant B"))
            .isNotEqualTo(ClientIdentity.parse("dn:CN=host-a"));
    }

    @Test
    void authorisationListsAreExactAndUnlistedVolumesFollowThePolicy() throws Exception {
        final TlsConfig c = new TlsConfig();
        c.mode = "required";
        c.pskFile = psk("alice:" + "11".repeat(16), "bob:" + "22".repeat(16)).toString();
        c.authorization = Map.of("a", List.of("psk:alice"));
        NbdTls tls = NbdTls.create(c);
        assertThat(tls.authorizes("a", new ClientIdentity.Psk("alice"))).isTrue();
        assertThat(tls.authorizes("a", new ClientIdentity.Psk("bob"))).isFalse();
        assertThat(tls.authorizes("a", null)).isFalse();
        assertThat(tls.authorizes("other", new ClientIdentity.Psk("bob"))).isTrue();
        c.unlistedVolumes = "deny";
        tls = NbdTls.create(c);
        assertThat(tls.authorizes("other", new ClientIdentity.Psk("alice"))).isFalse();
        c.unlistedVolumes = "maybe";
        assertThatThrownBy(() -> NbdTls.create(c)).hasMessageContaining("use allow or deny");
    }

    @Test
    void pskFilesAreCheckedLineByLine() throws Exception {
        final TlsConfig c = new TlsConfig();
        c.mode = "required";
        c.pskFile = psk("alice:abcd").toString();
        assertThatThrownBy(() -> NbdTls.create(c)).hasMessageContaining("line 1").hasMessageContaining("16 bytes");
        c.pskFile = psk("# nothing").toString();
        assertThatThrownBy(() -> NbdTls.create(c)).hasMessageContaining("has no keys").hasMessageContaining("psktool");
        c.pskFile = psk("alice:" + "zz".repeat(16)).toString();
        assertThatThrownBy(() -> NbdTls.create(c)).hasMessageContaining("identity:hexkey");
    }

    private Path psk(final String... lines) throws Exception {
        return Files.write(Files.createTempFile(dir, "keys", ".psk"), List.of(lines));
    }
}
