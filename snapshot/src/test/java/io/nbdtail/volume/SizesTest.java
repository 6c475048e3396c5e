package io.nbdtail.volume;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class SizesTest {
    @ParameterizedTest
    @CsvSource({
        "0, 0",
        "512, 512",
        "1048576, 1048576",
        "512B, 512",
        "512K, 524288",
        "512k, 524288",
        "64M, 67108864",
        "20G, 21474836480",
        "20g, 21474836480",
        "20GiB, 21474836480",
        "20gib, 21474836480",
        "' 20 G ', 21474836480",
        "2T, 2199023255552",
        "1P, 1125899906842624",
        "4096P, 4611686018427387904",
        "9223372036854775807, 9223372036854775807",
    })
    void shouldParse(final String text, final long bytes) {
        assertThat(Sizes.parse(text)).isEqualTo(bytes);
    }

    @ParameterizedTest
    @ValueSource(strings = {"", " ", "G", "20X", "20GX", "-1", "-20G", "1.5T", "20 G B", "0x100", "20KiBB", "K20"})
    void shouldRejectMalformedSizesSayingWhatIsAccepted(final String text) {
        assertThatThrownBy(() -> Sizes.parse(text))
            .isInstanceOf(IllegalArgumentException.class)
            .hasMessageContaining("invalid size '" + text + "'")
            .hasMessageContaining("K, M, G, T or P (powers of 1024), e.g. 20G");
    }

    @Test
    void shouldExplainTheRejectedForms() {
        assertThatThrownBy(() -> Sizes.parse("1.5T")).hasMessageContaining("whole numbers only");
        assertThatThrownBy(() -> Sizes.parse("20GB")).hasMessageContaining("'GB' is ambiguous: write G or GiB");
        assertThatThrownBy(() -> Sizes.parse("-5")).hasMessageContaining("cannot be negative");
        assertThatThrownBy(() -> Sizes.parse(null)).isInstanceOf(IllegalArgumentException.class);
    }

    @ParameterizedTest
    @ValueSource(strings = {"8192P", "9223372036854775808", "99999999999999999999999", "9007199254740992G"})
    void shouldRejectSizesThatOverflow(final String text) {
        assertThatThrownBy(() -> Sizes.parse(text))
            .isInstanceOf(IllegalArgumentException.class)
            .hasMessageContaining("'" + text + "'")
            .hasMessageContaining("does not fit in 63 bits");
    }

    @ParameterizedTest
    @CsvSource({
        "0, 0 B",
        "512, 512 B",
        "1023, 1023 B",
        "1024, 1 KiB",
        "1536, 1.5 KiB",
        "1048576, 1 MiB",
        "21474836480, 20 GiB",
        "1610612736, 1.5 GiB",
        "1073741823, 1 GiB",
        "1073741824000, 1000 GiB",
        "1099511627776, 1 TiB",
        "4611686018427387904, 4 EiB",
        "9223372036854775807, 8 EiB",
    })
    void shouldFormat(final long bytes, final String text) {
        assertThat(Sizes.format(bytes)).isEqualTo(text);
    }
}
