package io.nbdtail.nbd.tls;

import io.nbdtail.testing.ExternalTool;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.security.PrivateKey;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * The private key formats a certificate directory shared with qemu holds, written by openssl: PKCS#8, SEC1 (what
 * GnuTLS 3.7 reads for EC) and PKCS#1; each must give the same key as its PKCS#8 form. Encrypted keys are refused
 * with the command that decrypts them.
 */
class PemFilesTest {
    @TempDir
    Path dir;

    private Path openssl(final String name, final String... args) {
        final Path out = dir.resolve(name);
        final String[] command = new String[args.length + 3];
        command[0] = "openssl";
        System.arraycopy(args, 0, command, 1, args.length);
        command[args.length + 1] = "-out";
        command[args.length + 2] = out.toString();
        ExternalTool.run(command).assertSuccess();
        return out;
    }

    @Test
    void readsEcKeysAsPkcs8AndSec1() throws Exception {
        final Path pkcs8 = openssl("ec8.pem", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256");
        final Path sec1 = openssl("ec1.pem", "ec", "-in", pkcs8.toString());
        assertThat(Files.readString(pkcs8)).contains("BEGIN PRIVATE KEY");
        assertThat(Files.readString(sec1)).contains("BEGIN EC PRIVATE KEY");
        final PrivateKey a = PemFiles.privateKey(pkcs8, "test");
        final PrivateKey b = PemFiles.privateKey(sec1, "test");
        assertThat(a.getAlgorithm()).isEqualTo("EC");
        assertThat(((java.security.interfaces.ECPrivateKey) b).getS())
            .isEqualTo(((java.security.interfaces.ECPrivateKey) a).getS());
    }

    @Test
    void readsRsaKeysAsPkcs8AndPkcs1() throws Exception {
        final Path pkcs8 = openssl("rsa8.pem", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048");
        final Path pkcs1 = openssl("rsa1.pem", "rsa", "-traditional", "-in", pkcs8.toString());
        assertThat(Files.readString(pkcs1)).contains("BEGIN RSA PRIVATE KEY");
        assertThat(PemFiles.privateKey(pkcs1, "test").getEncoded()).isEqualTo(PemFiles.privateKey(pkcs8, "test")
            .getEncoded());
    }

    @Test
    void refusesEncryptedKeysAndOtherFiles() throws Exception {
        final Path pkcs8 = openssl("k.pem", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256");
        final Path encrypted = openssl("enc.pem", "pkey", "-in", pkcs8.toString(), "-aes256", "-passout",
            "pass:secret");
        assertThatThrownBy(() -> PemFiles.privateKey(encrypted, "mirror.tls.certificates"))
            .isInstanceOf(IllegalArgumentException.class)
            .hasMessageStartingWith("mirror.tls.certificates: ")
            .hasMessageContaining("an encrypted key").hasMessageContaining("openssl pkey");
        final Path text = Files.writeString(dir.resolve("x.pem"), "not a key\n");
        assertThatThrownBy(() -> PemFiles.privateKey(text, "s")).hasMessageContaining("no PEM block");
        assertThatThrownBy(() -> PemFiles.certificates(text, "s")).hasMessageContaining("is not a PEM certificate");
    }
}
