package io.nbdtail.nbd.protocol;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import static io.nbdtail.nbd.protocol.NbdConstants.CMD_FLAG_DF;
import static io.nbdtail.nbd.protocol.NbdConstants.CMD_FLAG_FAST_ZERO;
import static io.nbdtail.nbd.protocol.NbdConstants.CMD_FLAG_FUA;
import static io.nbdtail.nbd.protocol.NbdConstants.CMD_FLAG_NO_HOLE;
import static io.nbdtail.nbd.protocol.NbdConstants.CMD_FLAG_REQ_ONE;
import static org.assertj.core.api.Assertions.assertThat;

class NbdCommandTest {

    @Test
    void shouldMapEveryWireValueOfTheSpec() {
        // NBD spec, "Request types": 0 READ .. 7 BLOCK_STATUS
        assertThat(NbdCommand.valueOf(0)).isEqualTo(NbdCommand.READ);
        assertThat(NbdCommand.valueOf(1)).isEqualTo(NbdCommand.WRITE);
        assertThat(NbdCommand.valueOf(2)).isEqualTo(NbdCommand.DISC);
        assertThat(NbdCommand.valueOf(3)).isEqualTo(NbdCommand.FLUSH);
        assertThat(NbdCommand.valueOf(4)).isEqualTo(NbdCommand.TRIM);
        assertThat(NbdCommand.valueOf(5)).isEqualTo(NbdCommand.CACHE);
        assertThat(NbdCommand.valueOf(6)).isEqualTo(NbdCommand.WRITE_ZEROES);
        assertThat(NbdCommand.valueOf(7)).isEqualTo(NbdCommand.BLOCK_STATUS);
    }

    @Test
    void shouldRoundTripTypeAndValueOf() {
        for (final NbdCommand command : NbdCommand.values()) {
            if (command != NbdCommand.UNKNOWN) {
                assertThat(NbdCommand.valueOf(command.type())).isSameAs(command);
            }
        }
        assertThat(NbdCommand.UNKNOWN.type()).isEqualTo(-1);
    }

    @ParameterizedTest
    @ValueSource(ints = {8, 9, 99, 0x7fff, 0xffff, 65535, -1, Integer.MIN_VALUE, Integer.MAX_VALUE})
    void shouldAnswerUnknownWhenTypeIsNotACommand(final int type) {
        assertThat(NbdCommand.valueOf(type)).isEqualTo(NbdCommand.UNKNOWN);
    }

    @Test
    void shouldAllowFuaOnEveryKnownCommand() {
        for (final NbdCommand command : NbdCommand.values()) {
            if (command != NbdCommand.UNKNOWN) {
                assertThat(command.validFlags() & CMD_FLAG_FUA).as(command.name()).isEqualTo(CMD_FLAG_FUA);
            }
        }
    }

    @Test
    void shouldAllowOnlyTheFlagsTheSpecDefinesPerCommand() {
        assertThat(NbdCommand.READ.validFlags()).isEqualTo(CMD_FLAG_FUA | CMD_FLAG_DF);
        assertThat(NbdCommand.WRITE.validFlags()).isEqualTo(CMD_FLAG_FUA);
        assertThat(NbdCommand.DISC.validFlags()).isEqualTo(CMD_FLAG_FUA);
        assertThat(NbdCommand.FLUSH.validFlags()).isEqualTo(CMD_FLAG_FUA);
        assertThat(NbdCommand.TRIM.validFlags()).isEqualTo(CMD_FLAG_FUA);
        assertThat(NbdCommand.CACHE.validFlags()).isEqualTo(CMD_FLAG_FUA);
        assertThat(NbdCommand.WRITE_ZEROES.validFlags())
            .isEqualTo(CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO);
        assertThat(NbdCommand.BLOCK_STATUS.validFlags()).isEqualTo(CMD_FLAG_FUA | CMD_FLAG_REQ_ONE);
        assertThat(NbdCommand.UNKNOWN.validFlags()).isZero();
    }

    @Test
    void shouldNotAllowNoHoleOrReqOneOrDfOutsideTheirCommands() {
        for (final NbdCommand command : NbdCommand.values()) {
            final int flags = command.validFlags();
            assertThat((flags & CMD_FLAG_NO_HOLE) != 0).as(command.name())
                .isEqualTo(command == NbdCommand.WRITE_ZEROES);
            assertThat((flags & CMD_FLAG_FAST_ZERO) != 0).as(command.name())
                .isEqualTo(command == NbdCommand.WRITE_ZEROES);
            assertThat((flags & CMD_FLAG_REQ_ONE) != 0).as(command.name())
                .isEqualTo(command == NbdCommand.BLOCK_STATUS);
            assertThat((flags & CMD_FLAG_DF) != 0).as(command.name()).isEqualTo(command == NbdCommand.READ);
        }
    }

    @Test
    void shouldReportWritesForCommandsThatChangeTheDisc() {
        assertThat(NbdCommand.WRITE.writes()).isTrue();
        assertThat(NbdCommand.TRIM.writes()).isTrue();
        assertThat(NbdCommand.WRITE_ZEROES.writes()).isTrue();
        assertThat(NbdCommand.READ.writes()).isFalse();
        assertThat(NbdCommand.DISC.writes()).isFalse();
        assertThat(NbdCommand.FLUSH.writes()).isFalse();
        assertThat(NbdCommand.CACHE.writes()).isFalse();
        assertThat(NbdCommand.BLOCK_STATUS.writes()).isFalse();
        assertThat(NbdCommand.UNKNOWN.writes()).isFalse();
    }
}
